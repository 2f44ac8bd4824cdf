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

const BODY_HIGH_WATER_MARK = 64 * 1024;
const NOT_YET = Symbol('not yet');
const NOT_YET_PROMISE: Promise<typeof NOT_YET> = Promise.resolve(NOT_YET);

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

function toRequest(scope: RequestScope): Request | null {
  const { head, ex } = scope;
  const method = head.method;
  const hasBody = method !== 'GET' && method !== 'HEAD' && head.contentLength !== 0;
  // Bodyless requests still have a readable side to drain so the exchange can close.
  if (!hasBody) ex.resume();
  try {
    return new LightRequest(scope, httpHeadersFromVars(ex.vars), hasBody ? requestBody : null) as unknown as Request;
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

// undici keeps what a Response was made from (string, bytes) beside its
// stream, under a private Symbol(state). Reading it lets a body that is
// already whole go out in one write with its Content-Length, without a stream
// reader and its promise turns per request (@hono/node-server reads the same
// field). If a Node release renames it, STATE is undefined and every body
// takes the streaming path: slower, not wrong.
const STATE = Reflect.ownKeys(new Response(null)).find((k): k is symbol => typeof k === 'symbol' && k.description === 'state');

/** The whole body of a Response made from a string or bytes that nobody has read; undefined otherwise. */
function wholeBody(res: Response): Uint8Array | undefined {
  if (STATE === undefined) return undefined;
  const body = (res as unknown as Record<symbol, { body?: { source?: unknown; stream?: ReadableStream } | null } | undefined>)[STATE]?.body;
  if (body === null || body === undefined) return undefined;
  const source = body.source;
  if (typeof source !== 'string' && !(source instanceof Uint8Array)) return undefined;
  if (body.stream?.locked !== false || res.bodyUsed) return undefined;
  return typeof source === 'string' ? Buffer.from(source) : source;
}

/** Head, whole body and end at once, with a Content-Length. */
function sendWhole(scope: RequestScope, status: number, headers: Vars, body: Uint8Array): void {
  const ex = scope.ex;
  if (!hasHeader(headers, 'content-length')) headers.push('content-length', String(body.byteLength));
  scope.headSent();
  if (ex.respondWhole) ex.respondWhole(status, headers, body);
  else {
    ex.respond(status, headers);
    ex.end(body);
  }
  scope.discardBody();
}

/** A LightResponse the app never read back: its parts go out as given, undici never involved. */
function sendParts(scope: RequestScope, parts: ResponseParts): void {
  const status = parts.status;
  const headers = parts.headers.slice();
  if (parts.body !== null && !bodyless(scope.head.method, status)) {
    sendWhole(scope, status, headers, typeof parts.body === 'string' ? Buffer.from(parts.body) : parts.body);
    return;
  }
  if (parts.body === null && !bodyless(scope.head.method, status) && !hasHeader(headers, 'content-length')) headers.push('content-length', '0');
  scope.headSent();
  scope.ex.respond(status, headers, { endStream: true });
  scope.discardBody();
}

async function sendResponse(scope: RequestScope, res: Response): Promise<void> {
  const parts = (res as { lightParts?: ResponseParts | null }).lightParts;
  if (parts) {
    sendParts(scope, parts);
    return;
  }
  const ex = scope.ex;
  const status = res.status;
  const headers = responseHeaders(res);
  const whole = wholeBody(res);
  if (whole !== undefined && !bodyless(scope.head.method, status)) {
    sendWhole(scope, status, headers, whole);
    return;
  }
  const body = res.body;
  if (body === null || bodyless(scope.head.method, status)) {
    if (body !== null) body.cancel().catch(() => {});
    else if (!bodyless(scope.head.method, status) && !hasHeader(headers, 'content-length')) headers.push('content-length', '0');
    scope.headSent();
    ex.respond(status, headers, { endStream: true });
    scope.discardBody();
    return;
  }
  const reader = body.getReader();
  scope.onCut = () => {
    reader.cancel().catch(() => {});
  };
  try {
    const first = await reader.read();
    if (scope.cut) return;
    if (first.done) {
      if (!hasHeader(headers, 'content-length')) headers.push('content-length', '0');
      scope.headSent();
      ex.respond(status, headers, { endStream: true });
      scope.discardBody();
      return;
    }
    let chunk = asBytes(first.value);
    let next = reader.read();
    // A body made from a string or bytes is complete after one chunk: when the
    // next read has already settled, send head, body and end together with a
    // Content-Length. Otherwise (a stream still producing: SSE) the head and
    // first chunk go out now, unsized.
    const peek = await Promise.race([next, NOT_YET_PROMISE]);
    if (scope.cut) return;
    if (peek !== NOT_YET && peek.done) {
      if (!hasHeader(headers, 'content-length')) headers.push('content-length', String(chunk.byteLength));
      scope.headSent();
      ex.respond(status, headers);
      ex.end(chunk);
      scope.discardBody();
      return;
    }
    scope.headSent();
    ex.respond(status, headers);
    for (;;) {
      if (!ex.write(chunk)) await drained(ex);
      if (scope.cut || ex.destroyed) return;
      const r = await next;
      if (scope.cut || ex.destroyed) return;
      if (r.done) break;
      chunk = asBytes(r.value);
      next = reader.read();
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
