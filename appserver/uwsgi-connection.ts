// uwsgi classic connections (NGINX uwsgi_pass, Apache mod_proxy_uwsgi): one
// request per connection; the response is raw HTTP/1.1 written to the socket
// and delimited by closing it, as uWSGI does.
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { type ProtocolError, protocolError } from '../protocol/errors.ts';
import { UwsgiRequestDecoder, type UwsgiRequestHandler } from '../protocol/uwsgi.ts';
import { type Vars, writeLatin1 } from '../protocol/vars.ts';
import type { AppExchange } from './exchange.ts';

export interface UwsgiContext {
  maxBody: number;
  /** Idle limit (ms) while the request vars are awaited. */
  headerTimeoutMs: number;
  dispatch(ex: AppExchange): void;
  protocolError(socket: Socket, err: ProtocolError | Error, kind: 'uwsgi'): void;
}

const HIGH_WATER_MARK = 64 * 1024;
const EXCHANGE_OPTIONS = { readableHighWaterMark: HIGH_WATER_MARK, writableHighWaterMark: HIGH_WATER_MARK };
/** Bodies up to this size are copied behind the head (one pooled buffer); larger ones are written as they are (writev). */
const COPY_BODY_LIMIT = 16 * 1024;

/** One uwsgi request/response as an AppExchange: readable = request body, writable = response body. */
export class UwsgiExchange extends Duplex implements AppExchange {
  readonly vars: Vars;
  readonly protocol = 'uwsgi' as const;
  headersSent = false;
  private readonly socket: Socket;
  private responseDone = false;
  /** Every request byte (vars and CONTENT_LENGTH bytes of body) has been read from the socket. */
  requestRead = false;

  constructor(socket: Socket, vars: Vars) {
    super(EXCHANGE_OPTIONS);
    this.socket = socket;
    this.vars = vars;
  }

  /** Request body bytes from the decoder; pauses the socket when the app reads slower than the peer sends. */
  pushBody(chunk: Buffer): void {
    if (!this.push(chunk)) this.socket.pause();
  }

  override _read(): void {
    if (this.socket.isPaused() && !this.socket.destroyed) this.socket.resume();
  }

  respond(status: number, headers: Vars, opts?: { endStream?: boolean }): void {
    if (this.headersSent) throw new Error('response head already sent');
    this.headersSent = true;
    const endStream = opts?.endStream === true;
    if (this.socket.destroyed) return;
    const head = responseHead(status, headers, !endStream, 0);
    this.socket.cork();
    this.socket.write(head);
    process.nextTick(uncork, this.socket);
    if (endStream) this.end();
  }

  /**
   * Head, body and end at once. Small bodies are copied behind the head into
   * one (pooled) buffer, larger ones go out with the head in one writev: one
   * syscall either way. When the whole request has been read, the connection
   * is closed as soon as the bytes are handed to the kernel, as uWSGI does
   * (no shutdown, no waiting for the front's FIN: two syscalls and a trip
   * through the event loop less per request); close() only resets a
   * connection whose receive queue holds unread bytes, and there are none.
   */
  respondWhole(status: number, headers: Vars, body: Uint8Array | readonly Uint8Array[]): void {
    if (this.headersSent) throw new Error('response head already sent');
    this.headersSent = true;
    const socket = this.socket;
    if (!socket.destroyed) {
      this.responseDone = true;
      const pieces = body instanceof Uint8Array ? null : body;
      let size = 0;
      if (pieces === null) size = (body as Uint8Array).byteLength;
      else for (const p of pieces) size += p.byteLength;
      if (size <= COPY_BODY_LIMIT) {
        // One buffer: the head, then the body copied behind it.
        const out = responseHead(status, headers, false, size);
        let at = out.length - size;
        if (pieces === null) out.set(body as Uint8Array, at);
        else
          for (const p of pieces) {
            out.set(p, at);
            at += p.byteLength;
          }
        socket.write(out);
      } else {
        socket.cork();
        socket.write(responseHead(status, headers, false, 0));
        if (pieces === null) socket.write(body as Uint8Array);
        else for (const p of pieces) if (p.byteLength > 0) socket.write(p);
        socket.uncork();
      }
      // Nothing left to write (the kernel took it all at once) or to read: close now.
      if (this.requestRead && socket.writableLength === 0) closeWritten(socket);
      else {
        // FIN once the rest is written; the rest of a request body the app
        // did not read is drained and dropped until the front closes.
        socket.end();
        socket.resume();
      }
    }
    this.end();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.socket.destroyed) {
      cb(new Error('connection closed'));
      return;
    }
    if (this.socket.write(chunk)) cb();
    else this.socket.once('drain', cb);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (err?: Error | null) => void): void {
    if (this.socket.destroyed) {
      cb(new Error('connection closed'));
      return;
    }
    this.socket.cork();
    let ok = true;
    for (const c of chunks) ok = this.socket.write(c.chunk);
    this.socket.uncork();
    if (ok) cb();
    else this.socket.once('drain', cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.responseDone) {
      cb(); // respondWhole already ended the socket
      return;
    }
    this.responseDone = true;
    // Close-delimited response: FIN (or the close, as in respondWhole) tells
    // the front the body is complete. Bytes of a request body the app did not
    // read are drained and dropped.
    const socket = this.socket;
    if (this.requestRead && socket.writableLength === 0) closeWritten(socket);
    else {
      socket.end();
      socket.resume();
    }
    cb();
  }

  /** True once the whole response has been handed to the socket. */
  get finished(): boolean {
    return this.responseDone;
  }

  /** The response is complete: the rest of the body is read and dropped while the connection closes (_final resumed the socket). */
  discardBody(): void {
    this.destroy();
  }

  reset(_code?: number): void {
    // Destroying the socket mid-response is the only way uwsgi can say "truncated".
    if (!this.responseDone) this.socket.destroy();
    this.destroy();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (!this.responseDone && !this.socket.destroyed) this.socket.destroy();
    cb(err);
  }
}

const STATUS_LINES: string[] = [];

/** "HTTP/1.1 200 OK\r\n", built once per status. */
function statusLine(status: number): string {
  let line = STATUS_LINES[status];
  if (line === undefined) {
    line = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}\r\n`;
    if (status >= 100 && status <= 999) STATUS_LINES[status] = line;
  }
  return line;
}

const CONNECTION_CLOSE = 'connection: close\r\n\r\n';
const NO_ACCEL_BUFFERING = 'x-accel-buffering: no\r\n';
/**
 * The HTTP/1.1 head of a close-delimited uwsgi response, written straight
 * into a (pooled) buffer with room for `bodySpace` bytes after it: no string
 * is built (a rope of a dozen pieces per response, then its flattening, was
 * 4 % of a worker's allocations). Header values are ByteStrings: latin1.
 */
function responseHead(status: number, headers: Vars, streamed: boolean, bodySpace: number): Buffer {
  const line = statusLine(status);
  let size = line.length + CONNECTION_CLOSE.length;
  let sized = false;
  let accel = false;
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i];
    if (name === 'content-length') sized = true;
    else if (name === 'x-accel-buffering') accel = true;
    size += name.length + headers[i + 1].length + 4;
  }
  // NGINX buffers uwsgi responses: a streamed (unsized) body such as SSE
  // would sit in its buffer. Tell it not to, unless the app decided.
  const noAccel = streamed && !sized && !accel;
  if (noAccel) size += NO_ACCEL_BUFFERING.length;
  const buf = Buffer.allocUnsafe(size + bodySpace);
  let p = writeLatin1(buf, 0, line);
  for (let i = 0; i < headers.length; i += 2) {
    p = writeLatin1(buf, p, headers[i]);
    buf[p++] = 58; // ':'
    buf[p++] = 32; // ' '
    p = writeLatin1(buf, p, headers[i + 1]);
    buf[p++] = 13;
    buf[p++] = 10;
  }
  if (noAccel) p = writeLatin1(buf, p, NO_ACCEL_BUFFERING);
  writeLatin1(buf, p, CONNECTION_CLOSE);
  return buf;
}

/**
 * Closes a socket whose writes have all completed. A write that took the
 * socket over its high-water mark left a 'drain' tick pending; destroying
 * before it runs makes Node build an ERR_STREAM_DESTROYED (stack trace
 * and all) for nobody, so the close waits for that tick.
 */
function closeWritten(socket: Socket): void {
  if (socket.writableNeedDrain) process.nextTick(destroySocket, socket);
  else socket.destroy();
}

function uncork(socket: Socket): void {
  socket.uncork();
}

function simpleResponse(status: number, text: string): string {
  return `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`;
}

const kConn = Symbol('gatewire.uwsgiConnection');
type ConnSocket = Socket & { [kConn]: UwsgiConnection };

/**
 * What the accepting server forwards a connection's socket events to once
 * its protocol is known: the server's own 'data', 'end' and 'close'
 * listeners stay on the socket and call these, so a connection costs no
 * listener added or removed beyond the server's (a connection per request
 * makes each one a per-request cost).
 */
export interface ConnectionSink {
  data(chunk: Buffer): void;
  /** The front half-closed. */
  end(): void;
  /** The socket closed. */
  closed(): void;
}

/**
 * One uwsgi connection: decoder callbacks and socket events on one object —
 * nothing allocated per connection but this object, the decoder and the
 * exchange.
 */
class UwsgiConnection implements UwsgiRequestHandler, ConnectionSink {
  ex: UwsgiExchange | null = null;
  readonly decoder: UwsgiRequestDecoder;
  private readonly socket: Socket;
  private readonly ctx: UwsgiContext;
  /** A protocol error ended the connection: later bytes are ignored. */
  private dead = false;

  constructor(socket: Socket, ctx: UwsgiContext) {
    this.socket = socket;
    this.ctx = ctx;
    this.decoder = new UwsgiRequestDecoder(this, { maxBody: ctx.maxBody });
  }

  onRequest(vars: Vars): void {
    if (this.socket.timeout) this.socket.setTimeout(0);
    const ex = new UwsgiExchange(this.socket, vars);
    ex.requestRead = this.decoder.contentLength === 0;
    this.ex = ex;
    this.ctx.dispatch(ex);
  }

  onBody(chunk: Buffer): void {
    this.ex!.pushBody(chunk);
  }

  onEnd(): void {
    this.ex!.requestRead = true;
    this.ex!.push(null);
  }

  data(chunk: Buffer): void {
    if (this.dead || this.ex?.finished) return; // response complete: the rest of the body is dropped
    const err = this.decoder.push(chunk);
    if (err) this.fail(err);
  }

  end(): void {
    const ex = this.ex;
    // The front half-closed before the whole request arrived: nothing to answer.
    if (ex === null) this.socket.destroy();
    else if (!this.decoder.done && !ex.destroyed) ex.destroy(new Error('request body truncated'));
  }

  closed(): void {
    const ex = this.ex;
    if (ex && !ex.destroyed) {
      if (!ex.finished) {
        ex.emit('aborted');
        ex.destroy(new Error('client closed the connection'));
      } else ex.destroy();
    }
  }

  fail(err: ProtocolError): void {
    const { socket, ctx, ex } = this;
    this.dead = true;
    if (err.codeName === 'BODY_TOO_LARGE' && ex === null) {
      socket.end(simpleResponse(413, 'Payload Too Large\n'));
      socket.resume();
      setTimeout(destroySocket, 5000, socket).unref();
      ctx.protocolError(socket, err, 'uwsgi');
      return;
    }
    ctx.protocolError(socket, err, 'uwsgi');
    if (ex && !ex.destroyed) ex.destroy(err);
    socket.destroy();
  }
}

function destroySocket(socket: Socket): void {
  socket.destroy();
}

function onConnTimeout(this: ConnSocket): void {
  const conn = this[kConn];
  if (conn.ex === null) conn.fail(protocolError('TIMEOUT', 'timed out waiting for the uwsgi request'));
}

/**
 * Reads one uwsgi request from `socket`, whose first bytes, `head`, were
 * already read for protocol detection; the caller forwards the socket's
 * later events to the returned sink.
 */
export function serveUwsgiConnection(socket: Socket, head: Buffer, ctx: UwsgiContext): ConnectionSink {
  const conn = new UwsgiConnection(socket, ctx);
  if (head.length > 0) conn.data(head);
  // Usually the whole request came with the first bytes: no timer to arm and disarm.
  if (conn.ex === null && !socket.destroyed) {
    (socket as ConnSocket)[kConn] = conn;
    socket.setTimeout(ctx.headerTimeoutMs, onConnTimeout);
  }
  return conn;
}
