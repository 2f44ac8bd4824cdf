// Runs a Node (req, res) listener — Express unchanged — on an exchange.
//
// Why a fake socket and a response parser: Express and the modules under it
// (send for res.sendFile, on-finished, cookie, body-parser) rely on the real
// http.IncomingMessage/ServerResponse, their implicit headers, chunking,
// HEAD/304 handling, 'finish'/'close' ordering and pipe() backpressure.
// Re-implementing ServerResponse would drift from Node's; instead the real
// ServerResponse writes HTTP/1.1 to an in-memory socket (ExchangeSocket) and
// the project's own incremental HttpResponseParser turns it back into a head
// and de-chunked body bytes for the exchange. The extra cost is one head
// format + parse per request (a few µs), the same for both protocols.
import { IncomingMessage, ServerResponse } from 'node:http';
// Hop-by-hop headers of the in-memory HTTP/1.1 leg never go out: the exchange frames the body itself.
import { HOP_BY_HOP } from '../protocol/hop-by-hop.ts';
import { Duplex } from 'node:stream';
import { ErrorCode } from '../protocol/constants.ts';
import { HttpResponseParser } from '../protocol/http-response.ts';
import { httpHeadersFromVars } from '../protocol/uwsgi.ts';
import type { Vars } from '../protocol/vars.ts';
import type { NodeListener } from './app.ts';
import type { AppExchange } from './exchange.ts';
import type { RequestScope } from './scope.ts';

const MAX_HEAD = 64 * 1024;

/** The net.Socket stand-in a ServerResponse writes its HTTP/1.1 bytes to. */
class ExchangeSocket extends Duplex {
  remoteAddress: string;
  remotePort: number;
  remoteFamily: string;
  localAddress = '';
  localPort = 0;
  encrypted: boolean | undefined;
  readonly parser: HttpResponseParser;
  private readonly ex: AppExchange;
  private pending: ((err?: Error | null) => void) | null = null;
  /** The app's output no longer goes anywhere (504 or 500 already sent, or the client left). */
  detached = false;
  _httpMessage: unknown = null;

  constructor(ex: AppExchange, scope: RequestScope) {
    super({ writableHighWaterMark: 64 * 1024 });
    this.ex = ex;
    const head = scope.head;
    this.remoteAddress = head.remoteAddr;
    this.remotePort = head.remotePort;
    this.remoteFamily = head.remoteAddr.includes(':') ? 'IPv6' : 'IPv4';
    // Express derives req.protocol from socket.encrypted.
    this.encrypted = head.scheme === 'https' ? true : undefined;
    this.parser = new HttpResponseParser(
      {
        onHead: (status, _reason, raw) => {
          if (this.detached) return;
          const headers: Vars = [];
          for (let i = 0; i < raw.length; i += 2) {
            const name = raw[i].toLowerCase();
            if (!HOP_BY_HOP.has(name)) headers.push(name, raw[i + 1]);
          }
          scope.headSent();
          ex.respond(status, headers, { endStream: this.parser.framing === 'none' });
        },
        onBody: (chunk) => {
          if (this.detached || ex.destroyed) return;
          if (!ex.write(chunk)) this.blocked = true;
        },
        onEnd: () => {
          if (this.detached) return;
          if (!ex.writableEnded) ex.end();
          scope.discardBody();
        },
      },
      { isHead: head.method === 'HEAD', maxHeaderSize: MAX_HEAD },
    );
    ex.on('drain', () => this.release());
  }

  private blocked = false;

  private release(): void {
    this.blocked = false;
    const cb = this.pending;
    this.pending = null;
    cb?.();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.detached) {
      cb();
      return;
    }
    const err = this.parser.push(chunk);
    if (err) {
      this.detached = true;
      cb(err);
      return;
    }
    if (this.blocked && !this.ex.destroyed) this.pending = cb;
    else cb();
  }

  override _read(): void {}

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.detached = true;
    this.release();
    cb(err);
  }

  setTimeout(_ms: number, _cb?: () => void): this {
    return this;
  }
  setNoDelay(): this {
    return this;
  }
  setKeepAlive(): this {
    return this;
  }
  ref(): this {
    return this;
  }
  unref(): this {
    return this;
  }
  destroySoon(): void {
    this.end();
  }
  address(): object {
    return {};
  }
}

function onSocketDrain(this: ExchangeSocket): void {
  const res = this._httpMessage as ServerResponse | null;
  if (res && !res.writableFinished && res.writableNeedDrain) res.emit('drain');
}

export function runNode(scope: RequestScope, listener: NodeListener): void {
  const { ex, head } = scope;
  const socket = new ExchangeSocket(ex, scope);
  const req = new IncomingMessage(socket as never);
  req.method = head.method;
  req.url = head.target;
  req.httpVersion = '1.1';
  req.httpVersionMajor = 1;
  req.httpVersionMinor = 1;
  const raw = httpHeadersFromVars(ex.vars);
  // A native upload of unknown length: body-parser and friends look for a
  // length or a transfer-encoding before they read a body at all.
  if (head.contentLength < 0 && head.method !== 'GET' && head.method !== 'HEAD' && !ex.readableEnded && !isUwsgi(ex)) raw.push('transfer-encoding', 'chunked');
  (req as unknown as { _addHeaderLines(h: string[], n: number): void })._addHeaderLines(raw, raw.length);

  // Request body: exchange → IncomingMessage, paused while the app is not reading.
  const limit = scope.limits.maxBody;
  let received = 0;
  ex.on('data', (chunk: Buffer) => {
    received += chunk.length;
    if (received > limit) {
      ex.removeAllListeners('data');
      req.destroy(new Error('request body exceeds --max-body'));
      scope.tooLarge();
      return;
    }
    if (!req.push(chunk)) ex.pause();
  });
  ex.once('end', () => {
    req.complete = true;
    req.push(null);
  });
  req._read = () => {
    (req as unknown as { _consuming: boolean })._consuming = true;
    if (ex.isPaused()) ex.resume();
  };

  const res = new ServerResponse(req);
  res.assignSocket(socket as never);
  socket.on('drain', onSocketDrain);
  res.once('finish', () => {
    // What node:http does after a response: drop an unread body, then 'close'.
    if (!(req as unknown as { _consuming: boolean })._consuming && !req.readableEnded) req.resume();
    process.nextTick(() => {
      res.emit('close');
      if (!req.destroyed) req.emit('close');
    });
  });
  scope.onCut = () => {
    socket.detached = true;
    if (!req.complete && !req.destroyed) req.destroy(Object.assign(new Error('aborted'), { code: 'ECONNRESET' }));
    socket.destroy();
  };

  let result: unknown;
  try {
    result = listener(req, res);
  } catch (err) {
    nodeAppFailed(scope, socket, err);
    return;
  }
  if (result && typeof (result as Promise<unknown>).then === 'function') {
    (result as Promise<unknown>).then(undefined, (err) => nodeAppFailed(scope, socket, err));
  }
}

function nodeAppFailed(scope: RequestScope, socket: ExchangeSocket, err: unknown): void {
  if (scope.cut) return;
  socket.detached = true;
  if (scope.ex.headersSent) {
    scope.limits.log.error({ err, method: scope.head.method, url: scope.head.target }, 'app error after the response head');
    scope.ex.reset(ErrorCode.INTERNAL_ERROR);
    scope.abort(err);
    return;
  }
  scope.appFailed(err);
}

function isUwsgi(ex: AppExchange): boolean {
  return (ex as { protocol?: string }).protocol === 'uwsgi';
}
