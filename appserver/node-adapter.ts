// Runs a Node (req, res) listener — Express unchanged — on an exchange.
//
// The app gets Node's real IncomingMessage and ServerResponse, so every public
// behaviour (implicit headers, Date, HEAD/204/304, 'finish'/'close' order,
// pipe() backpressure) is Node's own. What differs from node:http is only
// where the bytes go: Node's server writes the rendered head and the body to
// a socket (chunk-framed when unsized); here the response is taken where
// Node hands it to the socket (node-internals.ts) — the rendered head is read
// back into a header list (Node's own rendering, a few lines to split) and the
// body pieces of one tick go to the exchange together, so `res.end(body)` is
// one head + body + end write, as a Fetch Response made of bytes is. The
// socket the app sees is a small stand-in with the peer's address.
import { EventEmitter } from 'node:events';
import { IncomingMessage, ServerResponse } from 'node:http';
import { ErrorCode } from '../protocol/constants.ts';
// Hop-by-hop headers Node renders for its own HTTP/1.1 connection never go out: the exchange frames the body itself.
import { HOP_BY_HOP } from '../protocol/hop-by-hop.ts';
import { httpHeadersFromVars } from '../protocol/uwsgi.ts';
import type { Vars } from '../protocol/vars.ts';
import type { NodeListener } from './app.ts';
import type { AppExchange, RequestHead } from './exchange.ts';
import { emitDrainIfNeeded, type ResponseOutput, responseOutput, routeResponse, setRawHeaders } from './node-internals.ts';
import type { RequestScope } from './scope.ts';

const HIGH_WATER_MARK = 64 * 1024;
/** Body pieces of one tick up to this size are joined into one buffer (one write); larger ones are written as they are. */
const CONCAT_LIMIT = 16 * 1024;

/**
 * What IncomingMessage, ServerResponse and the modules under Express
 * (on-finished, send, proxy-addr) read from a socket: the peer's address,
 * writable/destroyed state, cork counts and 'close'. No bytes pass through it.
 */
class ExchangeSocket extends EventEmitter {
  remoteAddress: string;
  remotePort: number;
  remoteFamily: string;
  localAddress = '';
  localPort = 0;
  /** Express derives req.protocol from socket.encrypted. */
  encrypted: boolean | undefined;
  readonly readableHighWaterMark = HIGH_WATER_MARK;
  readonly writableHighWaterMark = HIGH_WATER_MARK;
  readable = true;
  writable = true;
  destroyed = false;
  _httpMessage: ServerResponse | null = null;
  /** OutgoingMessage.end() sets corked = 1 and calls uncork() to flush a socket fully. */
  readonly _writableState = { corked: 0 };
  private readonly out: ExchangeOutput;

  constructor(head: RequestHead, out: ExchangeOutput) {
    super();
    this.remoteAddress = head.remoteAddr;
    this.remotePort = head.remotePort;
    this.remoteFamily = head.remoteAddr.includes(':') ? 'IPv6' : 'IPv4';
    this.encrypted = head.scheme === 'https' ? true : undefined;
    this.out = out;
  }

  get writableCorked(): number {
    return this._writableState.corked;
  }
  get writableLength(): number {
    return this.out.bufferedBytes();
  }
  cork(): void {
    this._writableState.corked++;
  }
  uncork(): void {
    if (this._writableState.corked > 0) this._writableState.corked--;
  }
  /** Only reached if Node flushes output it buffered itself (it does not, with the response routed). */
  write(data: string | Uint8Array, encoding?: BufferEncoding | null | ((err?: Error | null) => void), cb?: (err?: Error | null) => void): boolean {
    if (typeof encoding === 'function') return this.out.send(null, data, null, encoding);
    return this.out.send(null, data, encoding, cb);
  }
  end(): this {
    return this;
  }
  destroySoon(): void {}
  destroy(err?: Error): this {
    if (this.destroyed) return this;
    this.destroyed = true;
    this.readable = false;
    this.writable = false;
    process.nextTick(emitClose, this, err !== undefined);
    return this;
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
  address(): object {
    return {};
  }
}

function emitClose(socket: ExchangeSocket, hadError: boolean): void {
  socket.emit('close', hadError);
}

type Callback = (err?: Error | null) => void;

/**
 * Header names as an app writes them ('Content-Type', 'X-Powered-By') → the lower-case name,
 * or '' for a hop-by-hop one: an app uses a handful of names, so each response's are looked
 * up rather than lower-cased again. Bounded: names past the limit are lower-cased each time.
 */
const LOWER_NAMES = new Map<string, string>();
const LOWER_NAMES_LIMIT = 512;

function lowerName(name: string): string {
  let lower = LOWER_NAMES.get(name);
  if (lower === undefined) {
    lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower)) lower = '';
    // Copies: a slice of the rendered head may be a view of all of it, which the cache would keep alive.
    if (LOWER_NAMES.size < LOWER_NAMES_LIMIT) LOWER_NAMES.set(ownCopy(name), (lower = ownCopy(lower)));
  }
  return lower;
}

/** A string of its own (header names are ASCII tokens: latin1 round-trips them). */
function ownCopy(s: string): string {
  return Buffer.from(s, 'latin1').toString('latin1');
}

/** Reads Node's rendered head ("HTTP/1.1 200 OK\r\nName: value\r\n…\r\n\r\n") into a lower-case header list. */
function headerList(text: string): Vars {
  const headers: Vars = [];
  let pos = text.indexOf('\r\n') + 2;
  const end = text.length - 2;
  while (pos < end) {
    const eol = text.indexOf('\r\n', pos);
    const colon = text.indexOf(':', pos);
    const name = lowerName(text.slice(pos, colon));
    if (name !== '') headers.push(name, text.slice(text.charCodeAt(colon + 1) === 32 ? colon + 2 : colon + 1, eol));
    pos = eol + 2;
  }
  return headers;
}

function hasHeader(headers: Vars, name: string): boolean {
  for (let i = 0; i < headers.length; i += 2) if (headers[i] === name) return true;
  return false;
}

/** The response's way to the exchange: a head, then the body pieces of each tick in one go. */
class ExchangeOutput implements ResponseOutput {
  readonly scope: RequestScope;
  req!: BodyReq;
  /** The request body is wired to the exchange (or there is none): set by the first read. */
  bodyAttached = false;
  /** Request body bytes received so far (the --max-body count for bodies of unknown length). */
  received = 0;
  res!: ServerResponse;
  private status = 200;
  private headers: Vars | null = null;
  private delivered = false;
  // The pieces and callbacks of the current tick: the first in a field, any more in an
  // array (the common res.end(body) is one piece and one callback: no array per request).
  private first: Uint8Array | null = null;
  private rest: Uint8Array[] | null = null;
  private bytes = 0;
  private cb: Callback | null = null;
  private moreCbs: Callback[] | null = null;
  private scheduled = false;
  private streaming = false;
  private ended = false;
  /** The app's output no longer goes anywhere (504 or 500 already sent, or the client left). */
  detached = false;
  /** The socket the app sees (destroyed when the request is cut). */
  socket!: ExchangeSocket;

  constructor(scope: RequestScope) {
    this.scope = scope;
  }

  bufferedBytes(): number {
    return this.bytes + this.scope.ex.writableLength;
  }

  head(res: ServerResponse, headerText: string): void {
    this.status = res.statusCode;
    this.headers = headerList(headerText);
  }

  send(_res: ServerResponse | null, data: string | Uint8Array, encoding: BufferEncoding | null | undefined, cb: Callback | null | undefined): boolean {
    if (this.detached) {
      if (cb) process.nextTick(cb);
      return true;
    }
    if (data.length > 0) {
      const buf = typeof data === 'string' ? Buffer.from(data, encoding ?? 'utf8') : data;
      if (this.first === null) this.first = buf;
      else if (this.rest === null) this.rest = [buf];
      else this.rest.push(buf);
      this.bytes += buf.byteLength;
    }
    if (cb) {
      if (this.cb === null) this.cb = cb;
      else if (this.moreCbs === null) this.moreCbs = [cb];
      else this.moreCbs.push(cb);
    }
    if (!this.scheduled) {
      this.scheduled = true;
      process.nextTick(flushOutput, this);
    }
    return this.bytes + this.scope.ex.writableLength < HIGH_WATER_MARK;
  }

  flush(): void {
    this.scheduled = false;
    const { scope, res } = this;
    const ex = scope.ex;
    const first = this.first;
    const rest = this.rest;
    const bytes = this.bytes;
    const cb = this.cb;
    const moreCbs = this.moreCbs;
    this.first = null;
    this.rest = null;
    this.bytes = 0;
    this.cb = null;
    this.moreCbs = null;
    if (this.detached || ex.destroyed) return;
    const ended = res.writableEnded;
    if (!this.delivered) {
      if (this.headers === null) return; // cannot happen: Node renders the head before the first piece
      this.delivered = true;
      scope.headSent();
      if (ended) {
        this.ended = true;
        // The common case, res.end(body) in one tick: head, body and end in one write.
        if (first === null) ex.respond(this.status, this.headers, { endStream: true });
        else {
          // Written in pieces but all there now (res.write … res.end in one tick): sized after all.
          if (!hasHeader(this.headers, 'content-length')) this.headers.push('content-length', String(bytes));
          if (rest === null) {
            if (ex.respondWhole) ex.respondWhole(this.status, this.headers, first);
            else {
              ex.respond(this.status, this.headers);
              ex.end(first);
            }
          } else {
            const pieces = [first, ...rest];
            // Large pieces go as they are (a copy of all of them would be garbage of the body's size), small ones joined.
            const body = bytes > CONCAT_LIMIT ? pieces : Buffer.concat(pieces);
            if (ex.respondWhole) ex.respondWhole(this.status, this.headers, body);
            else {
              ex.respond(this.status, this.headers);
              for (let i = 0; i < pieces.length - 1; i++) ex.write(pieces[i]);
              ex.end(pieces[pieces.length - 1]);
            }
          }
        }
        if (cb !== null) callAll(cb, moreCbs);
        scope.discardBody();
        return;
      }
      ex.respond(this.status, this.headers);
    }
    if (!this.streaming) {
      this.streaming = true;
      ex.on('drain', () => emitDrainIfNeeded(res));
    }
    const done = cb === null ? undefined : moreCbs === null ? cb : (err?: Error | null) => callAll(cb, moreCbs, err);
    if (first !== null) {
      if (rest === null) ex.write(first, ended ? undefined : done);
      else {
        ex.write(first);
        const last = rest.length - 1;
        for (let i = 0; i <= last; i++) ex.write(rest[i], i === last && !ended ? done : undefined);
      }
    }
    if (ended) {
      this.ended = true;
      ex.end(done);
      scope.discardBody();
    } else {
      if (first === null && done) process.nextTick(done);
      if (ex.writableLength < HIGH_WATER_MARK) emitDrainIfNeeded(res);
    }
  }

  /**
   * 'finish' was emitted: the exchange must be ended too. Node emits it
   * without a last _send when everything was already written (a pipe() that
   * ends after its last write was flushed).
   */
  finished(): void {
    if (this.ended || this.scheduled || this.detached || !this.delivered) return;
    this.ended = true;
    const ex = this.scope.ex;
    if (!ex.destroyed && !ex.writableEnded) ex.end();
    this.scope.discardBody();
  }
}

function callAll(cb: Callback, more: Callback[] | null, err?: Error | null): void {
  cb(err);
  if (more !== null) for (let i = 0; i < more.length; i++) more[i](err);
}

function flushOutput(out: ExchangeOutput): void {
  out.flush();
}

// The request and its exchange both lead to the request's ExchangeOutput, which holds the
// body's state: module-level handlers instead of closures per request.
const kOut = Symbol('gatewire.nodeExchange');
type BodyReq = IncomingMessage & { [kOut]: ExchangeOutput };
type BodyExchange = AppExchange & { [kOut]: ExchangeOutput };

/** IncomingMessage._read: the first read attaches the request body; later ones resume the exchange. */
function readBody(this: BodyReq): void {
  const out = this[kOut];
  if (!out.bodyAttached) {
    out.bodyAttached = true;
    const ex = out.scope.ex as BodyExchange;
    ex[kOut] = out;
    ex.on('data', onBodyData);
    ex.on('end', onBodyEnd);
  } else if (!this.complete) {
    const ex = out.scope.ex;
    if (ex.isPaused()) ex.resume();
  }
}

/** Request body: exchange (`this`) → IncomingMessage, the exchange paused while the app does not read. */
function onBodyData(this: BodyExchange, chunk: Buffer): void {
  const out = this[kOut];
  const req = out.req;
  out.received += chunk.length;
  if (out.received > out.scope.limits.maxBody) {
    this.removeAllListeners('data');
    req.destroy(new Error('request body exceeds --max-body'));
    out.scope.tooLarge();
    return;
  }
  if (!req.push(chunk)) this.pause();
}

function onBodyEnd(this: BodyExchange): void {
  const req = this[kOut].req;
  req.complete = true;
  req.push(null);
}

/** Node's own IncomingMessage for a request head, as node:http builds it (HTTP/1.1; the caller sets the headers). */
export function incomingMessage(socket: object, head: RequestHead): IncomingMessage {
  const req = new IncomingMessage(socket as never);
  req.method = head.method;
  req.url = head.target;
  req.httpVersion = '1.1';
  req.httpVersionMajor = 1;
  req.httpVersionMinor = 1;
  return req;
}

export function runNode(scope: RequestScope, listener: NodeListener): void {
  const { ex, head } = scope;
  const out = new ExchangeOutput(scope);
  const socket = new ExchangeSocket(head, out);
  const req = incomingMessage(socket, head) as BodyReq;
  out.socket = socket;
  out.req = req;
  const raw = httpHeadersFromVars(ex.vars);
  const bodyless = head.contentLength === 0 || ex.readableEnded || (head.contentLength < 0 && (head.method === 'GET' || head.method === 'HEAD'));
  // A body of unknown length (native uploads): body-parser and friends look for a
  // length or a transfer-encoding before they read a body at all.
  if (!bodyless && head.contentLength < 0) raw.push('transfer-encoding', 'chunked');
  // Before `complete` is set: Node files the header lines of a complete message as trailers.
  setRawHeaders(req, raw);
  req[kOut] = out;
  if (bodyless) {
    out.bodyAttached = true;
    req.complete = true;
    req.push(null);
    // Nothing to read, but the exchange's readable side must still end for it to close.
    ex.resume();
  }
  req._read = readBody;

  const res = new ServerResponse(req);
  out.res = res;
  routeResponse(res, out);
  res.assignSocket(socket as never);
  // Module-level listeners with their state on the output: no closures per request.
  res.on('finish', onResponseFinish);
  scope.adapterState = out;
  scope.onCut = cutNodeExchange;

  let result: unknown;
  try {
    result = listener(req, res);
  } catch (err) {
    nodeAppFailed(scope, out, err);
    return;
  }
  if (result && typeof (result as Promise<unknown>).then === 'function') {
    (result as Promise<unknown>).then(undefined, (err) => nodeAppFailed(scope, out, err));
  }
}

/** 'finish' on the response (`this`): what node:http does after a response. */
function onResponseFinish(this: ServerResponse): void {
  const out = responseOutput(this) as ExchangeOutput;
  out.finished();
  const req = out.req;
  // An unread body is dropped, as node:http dumps it; its end then closes the request
  // (autoDestroy), once. A body the app never started reading is not read at all
  // (scope.discardBody() stops it): that request never ends and gets its 'close' below.
  if (out.bodyAttached && !req.readableEnded && req.readableFlowing !== true) req.resume();
  process.nextTick(emitCloses, out);
}

function emitCloses(out: ExchangeOutput): void {
  out.res.emit('close');
  const req = out.req;
  if (!req.complete && !req.destroyed) req.emit('close');
}

/** scope.onCut (`this` is the scope): the app's output goes nowhere from now on, its request body is aborted. */
function cutNodeExchange(this: RequestScope): void {
  const out = this.adapterState as ExchangeOutput;
  out.detached = true;
  const req = out.req;
  if (!req.complete && !req.destroyed) req.destroy(Object.assign(new Error('aborted'), { code: 'ECONNRESET' }));
  out.socket.destroy();
}

function nodeAppFailed(scope: RequestScope, out: ExchangeOutput, err: unknown): void {
  if (scope.cut) return;
  out.detached = true;
  if (scope.ex.headersSent) {
    scope.limits.log.error({ err, method: scope.head.method, url: scope.head.target }, 'app error after the response head');
    scope.ex.reset(ErrorCode.INTERNAL_ERROR);
    scope.abort(err);
    return;
  }
  scope.appFailed(err);
}
