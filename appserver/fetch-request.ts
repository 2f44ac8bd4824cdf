// The Request a Fetch handler receives, built lazily.
//
// Why not `new Request(...)` per request: undici's constructor creates an
// AbortController of its own (and, given a signal, makes it follow ours with
// listeners and a transferable wrapper), converts the headers through WebIDL,
// parses the URL and sets up body state — about 15 % of the appserver's CPU on
// a hello request behind NGINX, for apps that mostly read url, method and a
// header or two. This object answers those from the vars it already has and
// builds the real undici Request only when the app touches something it cannot
// answer cheaply (a request body, clone(), text(), cache, ...). The same idea
// as @hono/node-server's lightweight Request.
//
// It passes for a Request: its prototype chain includes Request.prototype
// (`instanceof Request` holds), and undici's internal symbol-keyed fields are
// forwarded to the real Request, so `new Request(request, init)` and
// `fetch(request)` work on it as on any Request.
import type { RequestHead } from './exchange.ts';
import { delegateToMaterialized } from './lazy-delegate.ts';

/** undici's instance fields (Symbol(state), Symbol(signal), ...), read from a real Request. */
const INTERNAL_KEYS = Reflect.ownKeys(new Request('http://localhost/')).filter((k): k is symbol => typeof k === 'symbol');

// WebIDL/undici rules the eager constructor enforced: checked up front so an
// unmappable request still gets a 400 before the app runs, not a 500 later.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const BAD_VALUE = /[\0\r\n]/;
const FORBIDDEN_METHODS = new Set(['CONNECT', 'TRACE', 'TRACK']);
const NORMALIZED_METHODS: Record<string, string> = { delete: 'DELETE', get: 'GET', head: 'HEAD', options: 'OPTIONS', post: 'POST', put: 'PUT' };
/** A host undici's URL parser certainly accepts (anything else is checked with URL.canParse). */
const PLAIN_HOST = /^[A-Za-z0-9.-]+(?::\d{1,4})?$/;

/** What the request is read from: the head, and the (lazy) signal of the request's scope. */
export interface RequestSource {
  readonly head: RequestHead;
  readonly signal: AbortSignal;
}

/** Opens the request body as a web stream; called at most once, when the app first reads the body. */
export type BodyOpener<S extends RequestSource> = (src: S) => ReadableStream<Uint8Array>;

export class RequestMappingError extends Error {}

export class LightRequest<S extends RequestSource = RequestSource> {
  readonly method: string;
  readonly url: string;
  private readonly src: S;
  private readonly pairs: string[];
  private readonly openBody: BodyOpener<S> | null;
  private headersObj: Headers | null = null;
  private real: Request | null = null;

  /** Throws RequestMappingError for what `new Request` would refuse. */
  /** `openBody` null: the request has no body. */
  constructor(src: S, headerPairs: string[], openBody: BodyOpener<S> | null) {
    const head = src.head;
    let method = head.method;
    if (!TOKEN.test(method)) throw new RequestMappingError(`'${method}' is not a valid HTTP method`);
    method = NORMALIZED_METHODS[method.toLowerCase()] ?? method;
    if (FORBIDDEN_METHODS.has(method.toUpperCase())) throw new RequestMappingError(`'${method}' HTTP method is unsupported`);
    const url = `${head.scheme}://${head.host}${head.target === '*' ? '/' : head.target}`;
    if ((!PLAIN_HOST.test(head.host) || head.host.includes('xn--')) && !URL.canParse(url)) throw new RequestMappingError(`invalid URL ${url}`);
    for (let i = 0; i < headerPairs.length; i += 2) {
      if (!TOKEN.test(headerPairs[i])) throw new RequestMappingError(`invalid header name ${JSON.stringify(headerPairs[i])}`);
      if (BAD_VALUE.test(headerPairs[i + 1])) throw new RequestMappingError(`invalid value for header ${headerPairs[i]}`);
    }
    this.method = method;
    this.url = url;
    this.src = src;
    this.pairs = headerPairs;
    this.openBody = openBody;
  }

  get headers(): Headers {
    if (this.real !== null) return this.real.headers;
    if (this.headersObj === null) {
      const h = new Headers();
      const p = this.pairs;
      for (let i = 0; i < p.length; i += 2) h.append(p[i], p[i + 1]);
      this.headersObj = h;
    }
    return this.headersObj;
  }

  /** Fires when the client goes away or the app is cut at --timeout (created on first read). */
  get signal(): AbortSignal {
    return this.src.signal;
  }

  get body(): ReadableStream<Uint8Array> | null {
    return this.openBody !== null ? this.materialize().body : null;
  }

  get bodyUsed(): boolean {
    return this.real?.bodyUsed ?? false;
  }

  /** The real undici Request, built once, carrying the same headers, body and signal. */
  materialize(): Request {
    if (this.real === null) {
      this.real = new Request(this.url, {
        method: this.method,
        headers: this.headersObj ?? pairsOf(this.pairs),
        body: this.openBody !== null ? this.openBody(this.src) : null,
        signal: this.src.signal,
        // @ts-expect-error: duplex is required by undici for streaming bodies but missing from lib.dom's RequestInit
        duplex: 'half',
      });
    }
    return this.real;
  }
}

function pairsOf(flat: string[]): [string, string][] {
  const out: [string, string][] = new Array(flat.length >> 1);
  for (let i = 0, j = 0; i < flat.length; i += 2, j++) out[j] = [flat[i], flat[i + 1]];
  return out;
}

// Every other Request member (cache, mode, clone(), text(), json(), bytes(), ...) and undici's
// internal fields (read by its constructor and fetch()) are answered by the real Request.
delegateToMaterialized(LightRequest, Request, INTERNAL_KEYS);
