// The globals a Fetch app sees in a worker: Request, Response and fetch,
// arranged around the lazy objects of fetch-request.ts and fetch-response.ts.
// This is the one place that relies on how undici (Node's fetch) treats
// objects that are not its own, checked by
// test/appserver-private-internals-are-as-relied-on.test.ts:
//
// - undici brand-checks every Request and Response it is given by a private
//   field (Node 22+; Symbol-keyed fields on Node 20), so a lazy object must be
//   exchanged for its materialized undici object before it reaches undici:
//   the global Request and fetch below do that for `new Request(request, init)`
//   and `fetch(request)`; `new Response(...)` is LightResponse itself.
// - `instanceof Request` / `instanceof Response` must keep holding for undici's
//   own objects and for the lazy ones, whichever global the app compares with.
//
// Nothing here reads undici's private state: a Node upgrade that changes
// undici's checks makes the test fail, not the appserver silently slower.
import { LightRequest } from './fetch-request.ts';
import { LightResponse, NativeResponse } from './fetch-response.ts';

const NativeRequest = globalThis.Request;
const nativeFetch = globalThis.fetch;

function unwrap(input: unknown): unknown {
  return input instanceof LightRequest ? input.materialize() : input;
}

/** undici's Request, taking a lazy Request as input like any other. */
class GatewireRequest extends NativeRequest {
  constructor(input: RequestInfo | URL, init?: RequestInit) {
    super(unwrap(input) as RequestInfo, init);
  }
}
// A lazy Request is a Request; so is every undici Request made elsewhere.
Object.defineProperty(GatewireRequest, Symbol.hasInstance, {
  value: (value: unknown): boolean => value instanceof NativeRequest,
});

function gatewireFetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
  return nativeFetch(unwrap(input) as RequestInfo, init);
}

/**
 * Before the app's module loads, so that its `new Response(...)` is the light
 * one. GATEWIRE_LIGHT_RESPONSE=0 keeps undici's Response (Request and fetch
 * are still the unwrapping ones: the app's request is always a lazy one).
 */
export function installLightGlobals(): void {
  const define = (name: string, value: unknown) => Object.defineProperty(globalThis, name, { value, writable: true, configurable: true, enumerable: false });
  define('Request', GatewireRequest);
  define('fetch', gatewireFetch);
  if (process.env.GATEWIRE_LIGHT_RESPONSE !== '0') define('Response', LightResponse);
}

export { NativeRequest, NativeResponse };
