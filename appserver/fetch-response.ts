// The Response class a Fetch app sees in an appserver process: undici's,
// built lazily.
//
// Why: Node 20's `new Response('Hello')` builds a web ReadableStream for the
// body (made transferable, with its controller and state), WebIDL-converts
// the init and fills a Headers list — about 13 % of the appserver's CPU on a
// hello request, for a body the appserver then sends as bytes. A
// LightResponse made from a string, bytes or null with a plain-object init
// keeps its status, headers and body as given; the appserver sends them as
// they are, and undici's Response is built only if the app itself reads the
// response back (headers, body, clone(), text(), ...). Anything else (a
// stream, a Blob, a Headers object, an init undici would convert or reject)
// builds undici's Response at once, so errors are thrown where they were.
// The same idea as @hono/node-server's global Response.
//
// It passes for a Response: `instanceof Response` holds for it and for
// undici's own Responses (fetch() results), the statics (json, redirect,
// error) are undici's, and undici's internal fields are forwarded to the
// materialized Response so undici functions accept it.
// Set GATEWIRE_LIGHT_RESPONSE=0 to keep undici's Response untouched.
import type { Vars } from '../protocol/vars.ts';
import { delegateToMaterialized } from './lazy-delegate.ts';

const NativeResponse = globalThis.Response;

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Values undici would reject or rewrite (trim): those take the eager path. */
const UNPLAIN_VALUE = /[\0\r\n]|[^\0-\xff]|^[\t ]|[\t ]$/;
const REASON_PHRASE = /^[\t\x20-\x7e\x80-\xff]*$/;
/** Statuses whose response must have a null body (undici's nullBodyStatus). */
const NULL_BODY_STATUS = new Set([101, 204, 205, 304]);
const TEXT_PLAIN = 'text/plain;charset=UTF-8';
const URLENCODED = 'application/x-www-form-urlencoded;charset=UTF-8';
const REDIRECT_STATUS = new Set([301, 302, 303, 307, 308]);

/** A body the appserver sends without undici: whole bytes (or a string), a Blob, or a stream it reads itself. */
export type LightBody = string | Uint8Array | Blob | ReadableStream<Uint8Array | string> | null;

/** What the appserver sends for a LightResponse that was never materialized. */
export interface ResponseParts {
  status: number;
  /** Flat [name, value, ...], lower-case names. */
  headers: Vars;
  body: LightBody;
}

type Init = { status?: unknown; statusText?: unknown; headers?: unknown } | undefined;

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** The body as the appserver keeps it and the content-type undici would give it; null: leave it to undici. */
function lightBody(body: unknown): { body: LightBody; type: string } | null {
  if (body === null || body === undefined) return { body: null, type: '' };
  if (typeof body === 'string') return { body, type: TEXT_PLAIN };
  if (body instanceof Uint8Array) return { body, type: '' };
  if (body instanceof ArrayBuffer) return { body: new Uint8Array(body), type: '' };
  if (ArrayBuffer.isView(body)) return { body: new Uint8Array(body.buffer as ArrayBuffer, body.byteOffset, body.byteLength), type: '' };
  if (body instanceof URLSearchParams) return { body: body.toString(), type: URLENCODED };
  if (body instanceof Blob) return { body, type: body.type };
  if (body instanceof ReadableStream) return body.locked ? null : { body: body as ReadableStream<Uint8Array>, type: '' };
  return null;
}

function addHeader(headers: Vars, name: unknown, value: unknown, unique: boolean): boolean {
  if (typeof name !== 'string' || !TOKEN.test(name)) return false;
  if (typeof value === 'number') value = String(value);
  if (typeof value !== 'string' || UNPLAIN_VALUE.test(value)) return false;
  const lower = name.toLowerCase();
  // Two spellings of one name are combined by Headers: leave that to undici.
  if (unique) for (let i = 0; i < headers.length; i += 2) if (headers[i] === lower) return false;
  headers.push(lower, value);
  return true;
}

/** Headers given as a plain object, [name, value] pairs or a Headers object; false: leave them to undici. */
function readHeaders(h: unknown, out: Vars): boolean {
  if (h === undefined) return true;
  if (isPlainObject(h)) {
    for (const name of Object.keys(h)) if (!addHeader(out, name, h[name], true)) return false;
    return true;
  }
  if (Array.isArray(h)) {
    for (const pair of h) if (!Array.isArray(pair) || pair.length !== 2 || !addHeader(out, pair[0], pair[1], true)) return false;
    return true;
  }
  if (h instanceof Headers) {
    // Already validated and combined by Headers; set-cookie comes out one value at a time.
    h.forEach((value, name) => {
      out.push(name, value);
    });
    return true;
  }
  return false;
}

/** The parts of `new Response(body, init)` when undici would accept them unchanged; null otherwise. */
function plainParts(body: unknown, init: Init): (ResponseParts & { statusText: string }) | null {
  const b = lightBody(body);
  if (b === null) return null;
  let status = 200;
  let statusText = '';
  const headers: Vars = [];
  if (init !== undefined && init !== null) {
    if (!isPlainObject(init)) return null;
    if (init.status !== undefined) {
      if (typeof init.status !== 'number' || !Number.isInteger(init.status) || init.status < 200 || init.status > 599) return null;
      status = init.status;
    }
    if (init.statusText !== undefined) {
      if (typeof init.statusText !== 'string' || !REASON_PHRASE.test(init.statusText)) return null;
      statusText = init.statusText;
    }
    if (!readHeaders(init.headers, headers)) return null;
  }
  if (b.body !== null && NULL_BODY_STATUS.has(status)) return null;
  if (b.type !== '') {
    let typed = false;
    for (let i = 0; i < headers.length; i += 2) if (headers[i] === 'content-type') typed = true;
    if (!typed) headers.push('content-type', b.type);
  }
  return { status, statusText, headers, body: b.body };
}

export class LightResponse {
  /** Set while the response is light; null once undici's Response exists. */
  private parts: (ResponseParts & { statusText: string }) | null;
  private real: Response | null;

  constructor(body?: unknown, init?: ResponseInit) {
    const parts = plainParts(body, init as Init);
    this.parts = parts;
    this.real = parts === null ? new NativeResponse(body as BodyInit | null | undefined, init) : null;
  }

  /** Response.json(data, init): the JSON text as a light body (undici's, for an init it would convert). */
  static json(data: unknown, init?: ResponseInit): Response {
    const text = JSON.stringify(data);
    const i = init as Init;
    if (text === undefined || (i !== undefined && (!isPlainObject(i) || (i.headers !== undefined && !isPlainObject(i.headers))))) return NativeResponse.json(data, init);
    const headers = { ...(i?.headers as Record<string, unknown> | undefined) };
    if (!Object.keys(headers).some((k) => k.toLowerCase() === 'content-type')) headers['content-type'] = 'application/json';
    return new LightResponse(text, { ...init, headers } as ResponseInit) as unknown as Response;
  }

  /** Response.redirect(url, status): a light null-body response with its Location (undici's for what it would refuse). */
  static redirect(url: string | URL, status = 302): Response {
    if (!REDIRECT_STATUS.has(status) || !URL.canParse(String(url))) return NativeResponse.redirect(url, status);
    return new LightResponse(null, { status, headers: { location: new URL(String(url)).href } }) as unknown as Response;
  }

  /** The parts to send, or null if the app has turned this into undici's Response (or it always was one). */
  get lightParts(): ResponseParts | null {
    return this.parts;
  }

  get status(): number {
    return this.parts !== null ? this.parts.status : this.real!.status;
  }

  get ok(): boolean {
    const s = this.status;
    return s >= 200 && s <= 299;
  }

  get statusText(): string {
    return this.parts !== null ? this.parts.statusText : this.real!.statusText;
  }

  /** undici's Response, built once from the same parts. */
  materialize(): Response {
    const p = this.parts;
    if (p !== null) {
      const pairs: [string, string][] = [];
      for (let i = 0; i < p.headers.length; i += 2) pairs.push([p.headers[i], p.headers[i + 1]]);
      this.real = new NativeResponse(p.body as BodyInit | null, { status: p.status, statusText: p.statusText, headers: pairs });
      this.parts = null;
    }
    return this.real!;
  }
}

// undici's own Responses (fetch() results, Response.json()) are Responses too;
// an app's subclass of Response keeps the ordinary instanceof.
Object.defineProperty(LightResponse, Symbol.hasInstance, {
  value: function hasInstance(this: unknown, value: unknown): boolean {
    if (this === LightResponse) return value instanceof NativeResponse;
    return Function.prototype[Symbol.hasInstance].call(this, value);
  },
});

// Every other member (headers, body, clone(), text(), ...) and undici's internal
// fields are answered by the materialized Response.
delegateToMaterialized(LightResponse, NativeResponse);
// Response.json(), Response.redirect(), Response.error() stay undici's.
Object.setPrototypeOf(LightResponse, NativeResponse);

export { NativeResponse };
