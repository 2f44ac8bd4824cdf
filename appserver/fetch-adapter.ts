// Runs a Fetch handler on an exchange: vars → Request (streaming body,
// abort signal), Response → RESPONSE head + body streamed as produced, with
// backpressure both ways.
import { ErrorCode } from '../protocol/constants.ts';
import { httpHeadersFromVars } from '../protocol/uwsgi.ts';
import type { Vars } from '../protocol/vars.ts';
import type { FetchHandler, ServeInfo } from './app.ts';
import { type AppExchange, bodyless } from './exchange.ts';
import { LightRequest } from './fetch-request.ts';
import type { ResponseParts } from './fetch-response.ts';
import type { RequestScope } from './scope.ts';
import { acceptWebSocket, refuseUpgradeWebSocket, upgradeWebSocketFor } from './websocket.ts';

// One frame's worth: chunks waiting here longer would outlive a young-generation
// collection and hold their 64 KiB until a full one (a 256 KiB queue raised the
// worker's peak during a 1 GiB upload from ≈ 207 to ≈ 249 MiB).
const BODY_HIGH_WATER_MARK = 64 * 1024;
/**
 * A response stream's chunks that are there at once are gathered up to this many bytes and sent
 * whole (see StreamResponse): the same bound as a request body's queue, for the same reason.
 */
const GATHER_LIMIT = BODY_HIGH_WATER_MARK;
const EMPTY = new Uint8Array(0);
const EMPTY_BUFFER = Buffer.alloc(0);

function requestBody(scope: RequestScope): ReadableStream<Uint8Array> {
  const ex = scope.ex;
  const limit = scope.limits.maxBody;
  let received = 0;
  let settled = false;
  return new ReadableStream<Uint8Array>(
    {
      start(controller) {
        ex.on('data', (chunk: Buffer) => {
          if (settled) return;
          received += chunk.length;
          if (received > limit) {
            settled = true;
            controller.error(new Error('request body exceeds --max-body'));
            scope.tooLarge();
            return;
          }
          controller.enqueue(chunk);
          if (controller.desiredSize !== null && controller.desiredSize <= 0) ex.pause();
        });
        ex.once('end', () => {
          if (!settled) {
            settled = true;
            controller.close();
          }
        });
        ex.once('close', () => {
          if (!settled) {
            settled = true;
            controller.error(new DOMException('the client went away', 'AbortError'));
          }
        });
      },
      pull() {
        if (ex.isPaused()) ex.resume();
      },
      cancel() {
        settled = true;
        scope.discardBody();
      },
    },
    { highWaterMark: BODY_HIGH_WATER_MARK, size: (chunk) => chunk.byteLength },
  );
}

/**
 * The whole request body in one buffer, read straight from the exchange: each
 * piece is copied once into a buffer sized by CONTENT_LENGTH (grown by
 * doubling, up to --max-body, when the length is unknown), never held as a
 * chunk meanwhile. A native stream hands the pieces over as they are decoded
 * (takeBody), without a chunk object or a 'data' event each.
 */
function requestBytes(scope: RequestScope): Promise<Buffer> {
  const ex = scope.ex;
  const limit = scope.limits.maxBody;
  const known = scope.head.contentLength;
  return new Promise<Buffer>((resolve, reject) => {
    let out: Buffer = known > 0 ? bodyBuffer(Math.min(known, limit)) : EMPTY_BUFFER;
    let received = 0;
    let settled = false;
    const take = (chunk: Buffer, start: number, end: number) => {
      if (settled) return;
      const total = received + (end - start);
      if (total > limit) {
        settled = true;
        reject(new Error('request body exceeds --max-body'));
        scope.tooLarge();
        return;
      }
      if (total > out.length) {
        // Unknown length (or more than announced): double, as far as the limit allows.
        const grown = bodyBuffer(Math.min(limit, Math.max(total, 2 * out.length, 16 * 1024)));
        out.copy(grown, 0, 0, received);
        out = grown;
      }
      chunk.copy(out, received, start, end);
      received = total;
    };
    ex.once('end', () => {
      if (settled) return;
      settled = true;
      resolve(received === out.length ? out : out.subarray(0, received));
    });
    ex.once('close', () => {
      if (settled) return;
      settled = true;
      reject(new DOMException('the client went away', 'AbortError'));
    });
    if (ex.destroyed && !ex.readableEnded) {
      // Gone before the app asked for the body ('close' has been emitted already).
      settled = true;
      reject(new DOMException('the client went away', 'AbortError'));
      return;
    }
    if (ex.takeBody) ex.takeBody(take);
    else ex.on('data', (chunk: Buffer) => take(chunk, 0, chunk.length));
  });
}

/**
 * Bodies at least this large that requestBytes allocated: text() (and json(), formData()) frees
 * them as soon as they are decoded. Left to the collector, a large body's buffer counts as V8
 * external memory until a full collection finds it dead and frees it within its pause (the
 * workers sweep ArrayBuffers on the main thread): over 5,000 1 MiB text() requests, mark-compact
 * time 527 → 403 ms and worker CPU 950 → 770 µs/request when they were freed at once.
 */
const FREE_DECODED_MIN = 64 * 1024;
const ownBodies = new WeakSet<ArrayBuffer>();
const canDetach = typeof (ArrayBuffer.prototype as { transfer?: unknown }).transfer === 'function';

/** BodySource.decoded: a body buffer of requestBytes' own, large, is detached (its memory freed now). */
export function freeDecoded(body: Buffer): void {
  const ab = body.buffer as ArrayBuffer;
  if (!canDetach || !ownBodies.has(ab)) return;
  ownBodies.delete(ab);
  (ab as ArrayBuffer & { transfer(n: number): ArrayBuffer }).transfer(0);
}

/** A buffer for `size` body bytes; a large one is a whole ArrayBuffer of its own (never a slice of Node's pool), remembered as freeable. */
export function bodyBuffer(size: number): Buffer {
  if (size < FREE_DECODED_MIN) return Buffer.allocUnsafe(size);
  const buf = Buffer.allocUnsafeSlow(size);
  ownBodies.add(buf.buffer as ArrayBuffer);
  return buf;
}

const BODY_SOURCE = { stream: requestBody, whole: requestBytes, decoded: freeDecoded };

function toRequest(scope: RequestScope): Request | null {
  const { head, ex } = scope;
  const method = head.method;
  const hasBody = method !== 'GET' && method !== 'HEAD' && head.contentLength !== 0;
  // Bodyless requests still have a readable side to drain so the exchange can close.
  if (!hasBody) ex.resume();
  try {
    return new LightRequest(scope, httpHeadersFromVars(ex.vars), hasBody ? BODY_SOURCE : null) as unknown as Request;
  } catch (err) {
    scope.limits.log.warn({ err: (err as Error).message, method, url: head.target }, 'request cannot be mapped to a Fetch Request: 400');
    return null;
  }
}

function drained(ex: AppExchange): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      ex.off('drain', done);
      ex.off('close', done);
      resolve();
    };
    ex.on('drain', done);
    ex.on('close', done);
  });
}

function responseHeaders(res: Response): Vars {
  const out: Vars = [];
  let cookies = false;
  res.headers.forEach((value, name) => {
    if (name === 'set-cookie') cookies = true;
    else out.push(name, value);
  });
  if (cookies) for (const c of res.headers.getSetCookie()) out.push('set-cookie', c);
  return out;
}

function hasHeader(headers: Vars, name: string): boolean {
  for (let i = 0; i < headers.length; i += 2) if (headers[i] === name) return true;
  return false;
}

function asBytes(chunk: unknown): Uint8Array {
  if (chunk instanceof Uint8Array) return chunk;
  if (typeof chunk === 'string') return Buffer.from(chunk);
  if (ArrayBuffer.isView(chunk)) return new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  if (chunk instanceof ArrayBuffer) return new Uint8Array(chunk);
  throw new TypeError(`response body chunk is ${typeof chunk}, expected Uint8Array`);
}

/** Head, whole body (one buffer or pieces in order) and end at once, with the body's own Content-Length (an app's wrong one would break the framing). */
function sendWhole(scope: RequestScope, status: number, headers: Vars, body: Uint8Array | Uint8Array[], length: number): void {
  const ex = scope.ex;
  setContentLength(headers, length);
  scope.headSent();
  if (ex.respondWhole) ex.respondWhole(status, headers, body);
  else {
    ex.respond(status, headers);
    if (body instanceof Uint8Array) ex.end(body);
    else {
      for (const piece of body) ex.write(piece);
      ex.end();
    }
  }
  scope.discardBody();
}

function setContentLength(headers: Vars, length: number): void {
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i] === 'content-length') {
      headers[i + 1] = String(length);
      return;
    }
  }
  headers.push('content-length', String(length));
}

/** A response without a body (null, HEAD, 204/304): the head with END_STREAM; a body stream given anyway is cancelled. */
function sendHeadOnly(scope: RequestScope, status: number, headers: Vars, body: ReadableStream | null): void {
  if (body !== null) body.cancel().catch(() => {});
  else if (!bodyless(scope.head.method, status) && !hasHeader(headers, 'content-length')) headers.push('content-length', '0');
  scope.headSent();
  scope.ex.respond(status, headers, { endStream: true });
  scope.discardBody();
}

/** A LightResponse the app never read back: its parts go out as given, undici never involved. */
async function sendParts(scope: RequestScope, parts: ResponseParts): Promise<void> {
  const status = parts.status;
  const headers = parts.headers.slice();
  const body = parts.body;
  if (body === null || bodyless(scope.head.method, status)) {
    sendHeadOnly(scope, status, headers, body instanceof ReadableStream ? body : null);
    return;
  }
  if (typeof body === 'string') {
    const bytes = Buffer.from(body);
    sendWhole(scope, status, headers, bytes, bytes.byteLength);
  } else if (body instanceof Uint8Array) sendWhole(scope, status, headers, body, body.byteLength);
  else if (body instanceof Blob) {
    const bytes = new Uint8Array(await body.arrayBuffer());
    if (!scope.cut && !scope.ex.destroyed) sendWhole(scope, status, headers, bytes, bytes.byteLength);
  } else sendStream(scope, status, headers, body);
}

async function sendResponse(scope: RequestScope, res: Response): Promise<void> {
  const parts = (res as { lightParts?: ResponseParts | null }).lightParts;
  if (parts) {
    await sendParts(scope, parts);
    return;
  }
  // undici's own Response (fetch() results, a LightResponse the app read back): status, headers and its body stream.
  const status = res.status;
  const headers = responseHeaders(res);
  const body = res.body;
  if (body === null || bodyless(scope.head.method, status)) sendHeadOnly(scope, status, headers, body);
  else sendStream(scope, status, headers, body);
}

type StreamRead = ReadableStreamReadResult<Uint8Array | string>;
type BodyReader = ReadableStreamDefaultReader<Uint8Array | string>;

/**
 * A response body produced as a stream. What the stream hands over at once is gathered first, up
 * to GATHER_LIMIT bytes: the first read is waited for however long it takes, each next read is
 * made as soon as a chunk comes, and the gathering ends with the first read still pending once the
 * microtasks queued so far, and those they queue, have run (a tick runs after the microtask queue
 * is drained). A stream answering its reads from its own promise chain (chunks enqueued in
 * start(), a pull() that enqueues, the next pull only after the previous one's promise settled)
 * is complete by then and goes out whole, sized, like bytes would; one waiting for I/O or a timer
 * (SSE, a slow source) gets its head and what it gave so far now, unsized, and the rest as it
 * comes (sendRest). Read callbacks and one tick per response, not a Promise.race and a tick per
 * chunk, nor an async function for a stream that was complete at once: those were most of what
 * gatewire added to a small ReadableStream.
 */
class StreamResponse {
  readonly scope: RequestScope;
  readonly status: number;
  readonly headers: Vars;
  readonly reader: BodyReader;
  readonly chunks: Uint8Array[] = [];
  length = 0;
  /** The gathering is over (sent whole, handed to sendRest, or failed): later read callbacks do nothing. */
  private settled = false;
  /** The gathering's tick was scheduled (with the first chunk). */
  private ticking = false;
  private inFlight: Promise<StreamRead> | null = null;
  private readonly onRead = (r: StreamRead) => this.take(r);
  private readonly onError = (err: unknown) => this.fail(err);

  constructor(scope: RequestScope, status: number, headers: Vars, reader: BodyReader) {
    this.scope = scope;
    this.status = status;
    this.headers = headers;
    this.reader = reader;
  }

  start(): void {
    this.read();
  }

  private read(): void {
    const next = this.reader.read();
    this.inFlight = next;
    next.then(this.onRead, this.onError);
  }

  private take(r: StreamRead): void {
    if (this.settled) return; // the tick came first: sendRest reads this result itself
    const scope = this.scope;
    if (scope.cut) {
      this.settled = true;
      return;
    }
    if (r.done) {
      this.settled = true;
      const chunks = this.chunks;
      sendWhole(scope, this.status, this.headers, chunks.length === 0 ? EMPTY : chunks.length === 1 ? chunks[0] : chunks, this.length);
      return;
    }
    if (!this.ticking) {
      this.ticking = true;
      process.nextTick(stopGathering, this);
    }
    let chunk: Uint8Array;
    try {
      chunk = asBytes(r.value);
    } catch (err) {
      this.fail(err);
      return;
    }
    this.chunks.push(chunk);
    this.length += chunk.byteLength;
    if (this.length > GATHER_LIMIT) {
      this.settled = true;
      sendRest(this, this.reader.read());
      return;
    }
    this.read();
  }

  /** The tick: the stream did not hand over its next chunk within its own promise chain. */
  stop(): void {
    if (this.settled) return;
    this.settled = true;
    if (this.scope.cut) return;
    sendRest(this, this.inFlight!);
  }

  private fail(err: unknown): void {
    if (this.settled) return; // sendRest meets the error on its read
    this.settled = true;
    streamFailed(this.scope, err);
  }
}

function stopGathering(s: StreamResponse): void {
  s.stop();
}

/** scope.onCut (`this` is the scope) while a response stream is read: stop reading it. */
function cancelResponseStream(this: RequestScope): void {
  (this.adapterState as BodyReader).cancel().catch(() => {});
}

function sendStream(scope: RequestScope, status: number, headers: Vars, body: ReadableStream<Uint8Array | string>): void {
  const reader = body.getReader();
  scope.adapterState = reader;
  scope.onCut = cancelResponseStream;
  new StreamResponse(scope, status, headers, reader).start();
}

/** The head and what was gathered now, unsized; then the rest of the stream as it comes, with backpressure. */
async function sendRest(s: StreamResponse, pending: Promise<StreamRead>): Promise<void> {
  const { scope, reader } = s;
  const ex = scope.ex;
  try {
    let next = pending;
    scope.headSent();
    ex.respond(s.status, s.headers);
    let ok = true;
    for (const chunk of s.chunks) ok = ex.write(chunk);
    s.chunks.length = 0;
    for (;;) {
      if (!ok) await drained(ex);
      if (scope.cut || ex.destroyed) return;
      const r = await next;
      if (scope.cut || ex.destroyed) return;
      if (r.done) break;
      const chunk = asBytes(r.value);
      next = reader.read();
      ok = ex.write(chunk);
    }
    ex.end();
    scope.discardBody();
  } catch (err) {
    streamFailed(scope, err);
  }
}

function streamFailed(scope: RequestScope, err: unknown): void {
  if (scope.cut) return;
  const ex = scope.ex;
  scope.limits.log.error({ err, method: scope.head.method, url: scope.head.target }, 'app response body failed');
  if (!ex.headersSent) scope.appFailed(err);
  else ex.reset(ErrorCode.INTERNAL_ERROR);
}

function isResponse(value: unknown): value is Response {
  if (value instanceof Response) return true;
  const v = value as Response | null;
  return typeof v === 'object' && v !== null && typeof v.status === 'number' && typeof v.headers?.forEach === 'function' && 'body' in v;
}

export function runFetch(scope: RequestScope, handler: FetchHandler): void {
  const request = toRequest(scope);
  if (request === null) {
    scope.replyError(400, 'Bad Request\n');
    return;
  }
  const { head } = scope;
  const info: ServeInfo = {
    remoteAddr: { hostname: head.remoteAddr, port: head.remotePort, transport: 'tcp' },
    vars: scope.ex.vars,
    upgradeWebSocket: scope.ex.upgrade === true ? upgradeWebSocketFor(scope) : refuseUpgradeWebSocket,
  };
  let result: Response | Promise<Response>;
  try {
    result = handler(request, info);
  } catch (err) {
    scope.appFailed(err);
    return;
  }
  if (typeof (result as { then?: unknown } | null)?.then === 'function') {
    (result as Promise<Response>).then(
      (res) => deliver(scope, res),
      (err) => {
        if (!scope.cut) scope.appFailed(err);
      },
    );
  } else deliver(scope, result);
}

function deliver(scope: RequestScope, res: unknown): void {
  if (scope.cut || scope.ex.destroyed) return;
  if (!isResponse(res)) {
    scope.appFailed(new TypeError(`the fetch handler returned ${res === null ? 'null' : typeof res}, not a Response`));
    return;
  }
  if (scope.ex.upgrade === true && acceptWebSocket(scope, res)) return;
  sendResponse(scope, res);
}
