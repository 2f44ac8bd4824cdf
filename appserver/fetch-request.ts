// The Request a Fetch handler receives, built lazily.
//
// Why not `new Request(...)` per request: undici's constructor creates an
// AbortController of its own (and, given a signal, makes it follow ours with
// listeners and a transferable wrapper), converts the headers through WebIDL,
// parses the URL and sets up body state — about 15 % of the appserver's CPU on
// a hello request behind NGINX, for apps that mostly read url, method and a
// header or two. This object answers those from the vars it already has and
// builds the real undici Request only when the app touches something it cannot
// answer cheaply (clone(), cache, signal-less members, ...). The body is read
// straight from the exchange: whole for text()/json()/arrayBuffer()/bytes()/
// blob()/formData() (urlencoded), or as a web stream for request.body — never
// through an undici Request built just to read it. The same idea as
// @hono/node-server's lightweight Request.
//
// It passes for a Request: its prototype chain includes Request.prototype
// (`instanceof Request` holds), and undici-globals.ts unwraps it where undici
// needs its own object (`new Request(request, init)`, `fetch(request)`).
import type { RequestHead } from './exchange.ts';
import { delegateToMaterialized } from './lazy-delegate.ts';
import { parseUrlencoded } from './urlencoded.ts';

/** undici's Request, captured before undici-globals.ts replaces the global. */
const NativeRequest = globalThis.Request;

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

/** How the request body is read: as a web stream (request.body), or whole (text(), json(), ...); at most one of them, once. */
export interface BodySource<S extends RequestSource> {
  stream(src: S): ReadableStream<Uint8Array>;
  /** The whole body in one buffer, without a web stream in between. */
  whole(src: S): Promise<Buffer>;
  /** A buffer whole() gave is no longer needed (text() decoded it): its memory may go now. */
  decoded?(body: Buffer): void;
}

const UTF8_BOM_0 = 0xef;
const URLENCODED = /^application\/x-www-form-urlencoded\s*(;|$)/i;

export class RequestMappingError extends Error {}

export class LightRequest<S extends RequestSource = RequestSource> {
  readonly method: string;
  readonly url: string;
  private readonly src: S;
  private readonly pairs: string[];
  private readonly bodySource: BodySource<S> | null;
  private headersObj: Headers | null = null;
  private real: Request | null = null;
  private bodyStream: ReadableStream<Uint8Array> | null = null;
  private consumed = false;

  /** Throws RequestMappingError for what `new Request` would refuse. */
  /** `bodySource` null: the request has no body. */
  constructor(src: S, headerPairs: string[], bodySource: BodySource<S> | null) {
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
    this.bodySource = bodySource;
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

  /** The body as a web stream read straight from the exchange (no undici Request is built for it). */
  get body(): ReadableStream<Uint8Array> | null {
    if (this.real !== null) return this.real.body;
    if (this.bodySource === null) return null;
    if (this.bodyStream === null) this.bodyStream = this.bodySource.stream(this.src);
    return this.bodyStream;
  }

  /** True once a whole-body reader ran or the body stream is being read (locked). */
  get bodyUsed(): boolean {
    if (this.real !== null) return this.real.bodyUsed;
    return this.consumed || (this.bodyStream?.locked ?? false);
  }

  /** The whole body; the same TypeError as undici's when it was already read. */
  private async wholeBody(): Promise<Buffer> {
    if (this.real !== null) return Buffer.from(await this.real.arrayBuffer());
    if (this.bodyUsed) throw new TypeError('Body is unusable: Body has already been read');
    this.consumed = true;
    if (this.bodySource === null) return Buffer.alloc(0);
    if (this.bodyStream !== null) return readAll(this.bodyStream);
    return this.bodySource.whole(this.src);
  }

  async text(): Promise<string> {
    const b = await this.wholeBody();
    // UTF-8 decode, a leading BOM dropped (what the Fetch spec's text() does).
    const start = b.length >= 3 && b[0] === UTF8_BOM_0 && b[1] === 0xbb && b[2] === 0xbf ? 3 : 0;
    const text = b.toString('utf8', start);
    // The string is a copy: the bytes are garbage now (whoever gave them says whether they can go at once).
    this.bodySource?.decoded?.(b);
    return text;
  }

  async json(): Promise<unknown> {
    return JSON.parse(await this.text());
  }

  async arrayBuffer(): Promise<ArrayBuffer> {
    const b = await this.wholeBody();
    // A buffer of its own: the body bytes may sit in a larger allocation.
    if (b.byteOffset === 0 && b.byteLength === b.buffer.byteLength) return b.buffer as ArrayBuffer;
    return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
  }

  async bytes(): Promise<Uint8Array> {
    return new Uint8Array(await this.arrayBuffer());
  }

  async blob(): Promise<Blob> {
    const b = await this.wholeBody();
    return new Blob([b as Uint8Array<ArrayBuffer>], { type: this.header('content-type') ?? '' });
  }

  /** urlencoded forms are parsed here; multipart ones by undici. */
  async formData(): Promise<FormData> {
    const type = this.header('content-type');
    if (type === undefined || !URLENCODED.test(type)) return this.materialize().formData();
    const form = new FormData();
    parseUrlencoded(await this.text(), form);
    return form;
  }

  private header(name: string): string | undefined {
    if (this.real !== null || this.headersObj !== null) return this.headers.get(name) ?? undefined;
    const p = this.pairs;
    for (let i = 0; i < p.length; i += 2) if (p[i] === name) return p[i + 1];
    return undefined;
  }

  /** The real undici Request, built once, carrying the same headers, body and signal. */
  materialize(): Request {
    if (this.real === null) {
      let body: ReadableStream<Uint8Array> | null = null;
      if (this.bodySource !== null && !this.consumed) body = this.bodyStream ?? this.bodySource.stream(this.src);
      this.real = new NativeRequest(this.url, {
        method: this.method,
        headers: this.headersObj ?? pairsOf(this.pairs),
        body,
        signal: this.src.signal,
        // @ts-expect-error: duplex is required by undici for streaming bodies but missing from lib.dom's RequestInit
        duplex: 'half',
      });
    }
    return this.real;
  }
}

async function readAll(stream: ReadableStream<Uint8Array>): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  const reader = stream.getReader();
  for (;;) {
    const r = await reader.read();
    if (r.done) return Buffer.concat(chunks);
    chunks.push(r.value);
  }
}

function pairsOf(flat: string[]): [string, string][] {
  const out: [string, string][] = new Array(flat.length >> 1);
  for (let i = 0, j = 0; i < flat.length; i += 2, j++) out[j] = [flat[i], flat[i + 1]];
  return out;
}

// Every other Request member (cache, mode, clone(), text(), json(), bytes(), ...) and undici's
// internal fields (read by its constructor and fetch()) are answered by the real Request.
delegateToMaterialized(LightRequest, NativeRequest);
