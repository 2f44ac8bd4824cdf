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
 * whole (see gather): the same bound as a request body's queue, for the same reason.
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
    let out: Buffer = known > 0 ? Buffer.allocUnsafe(Math.min(known, limit)) : EMPTY_BUFFER;
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
        const grown = Buffer.allocUnsafe(Math.min(limit, Math.max(total, 2 * out.length, 16 * 1024)));
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

const BODY_SOURCE = { stream: requestBody, whole: requestBytes };

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
  } else await sendStream(scope, status, headers, body);
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
  else await sendStream(scope, status, headers, body);
}

type StreamRead = ReadableStreamReadResult<Uint8Array | string>;

/** What a response stream handed over at once (see gather). */
interface Gathered {
  chunks: Uint8Array[];
  length: number;
  /** The stream ended within the gathering. */
  done: boolean;
  /** Otherwise: its read in flight, which the streaming goes on from. */
  next: Promise<StreamRead> | null;
}

/** The gathering of one response stream: its reads' callbacks, and the tick that ends it. */
class Gathering {
  readonly reader: ReadableStreamDefaultReader<Uint8Array | string>;
  readonly out: Gathered = { chunks: [], length: 0, done: false, next: null };
  private settled = false;
  private inFlight: Promise<StreamRead> | null = null;
  private readonly resolve: (g: Gathered) => void;
  private readonly reject: (err: unknown) => void;
  private readonly onRead = (r: StreamRead) => this.take(r);
  private readonly onError = (err: unknown) => this.fail(err);

  constructor(reader: ReadableStreamDefaultReader<Uint8Array | string>, resolve: (g: Gathered) => void, reject: (err: unknown) => void) {
    this.reader = reader;
    this.resolve = resolve;
    this.reject = reject;
  }

  take(r: StreamRead): void {
    if (this.settled) return; // the tick came first: the streaming reads this result from `next`
    const out = this.out;
    if (r.done) {
      out.done = true;
      this.finish();
      return;
    }
    let chunk: Uint8Array;
    try {
      chunk = asBytes(r.value);
    } catch (err) {
      this.fail(err);
      return;
    }
    out.chunks.push(chunk);
    out.length += chunk.byteLength;
    const next = this.reader.read();
    if (out.length > GATHER_LIMIT) {
      out.next = next;
      this.finish();
      return;
    }
    this.inFlight = next;
    next.then(this.onRead, this.onError);
  }

  /** The tick: the stream has not handed over its next chunk within its own promise chain. */
  stop(): void {
    if (this.settled) return;
    this.out.next = this.inFlight;
    this.finish();
  }

  private finish(): void {
    this.settled = true;
    this.inFlight = null;
    this.resolve(this.out);
  }

  private fail(err: unknown): void {
    if (this.settled) return; // the streaming meets the error on `next`
    this.settled = true;
    this.reject(err);
  }
}

function stopGathering(g: Gathering): void {
  g.stop();
}

/**
 * The chunks a stream hands over at once, from its first one on, up to GATHER_LIMIT bytes: each
 * next read is made as soon as a chunk comes, and the gathering ends with the first read still
 * pending once the microtasks queued so far, and those they queue, have run (a tick runs after the
 * microtask queue is drained). A stream answering its reads from its own promise chain (chunks
 * enqueued in start(), a pull() that enqueues, the next pull only after the previous one's
 * promise settled) is complete by then; one waiting for I/O or a timer is not. Callbacks and one
 * tick per response, not a Promise.race and a tick per chunk (those were most of the cost of
 * reading a small ReadableStream).
 */
function gather(reader: ReadableStreamDefaultReader<Uint8Array | string>, first: StreamRead): Promise<Gathered> {
  return new Promise<Gathered>((resolve, reject) => {
    const g = new Gathering(reader, resolve, reject);
    process.nextTick(stopGathering, g);
    g.take(first);
  });
}

/**
 * A body produced as a stream, written as it comes with backpressure. What the stream hands over
 * at once is gathered first (see gather): a stream that is complete by then (a few chunks
 * enqueued in one go) goes out whole, sized, like bytes would; one still producing (SSE, a slow
 * source) gets its head and what it gave so far now, unsized, and the rest as it comes.
 */
async function sendStream(scope: RequestScope, status: number, headers: Vars, body: ReadableStream<Uint8Array | string>): Promise<void> {
  const ex = scope.ex;
  const reader = body.getReader();
  scope.onCut = () => {
    reader.cancel().catch(() => {});
  };
  try {
    // The first read is waited for however long it takes.
    const first = await reader.read();
    if (scope.cut) return;
    const g = await gather(reader, first);
    if (scope.cut) return;
    const gathered = g.chunks;
    if (g.done) {
      sendWhole(scope, status, headers, gathered.length === 0 ? EMPTY : gathered.length === 1 ? gathered[0] : gathered, g.length);
      return;
    }
    let next = g.next!;
    scope.headSent();
    ex.respond(status, headers);
    let ok = true;
    for (const chunk of gathered) ok = ex.write(chunk);
    gathered.length = 0;
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
    if (scope.cut) return;
    scope.limits.log.error({ err, method: scope.head.method, url: scope.head.target }, 'app response body failed');
    if (!ex.headersSent) scope.appFailed(err);
    else ex.reset(ErrorCode.INTERNAL_ERROR);
  }
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
