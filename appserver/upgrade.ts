// Upgraded exchanges (PROTOCOL.md 4.3) on the app side: the socket an app's
// 'upgrade' handler (ws, socket.io/engine.io) writes its raw `HTTP/1.1 101`
// and then its protocol to, turned back into a RESPONSE and tunnel DATA; and
// the registry of open tunnels a graceful stop closes with 1001.
//
// Why a Duplex and a response parser, as node-adapter.ts does for requests:
// `ws.handleUpgrade` and engine.io write the handshake answer (101, or a 400
// they compose themselves) as HTTP/1.1 bytes to whatever socket they were
// given, then frames; they need only a Duplex (ws says so). Parsing that head
// with the project's HttpResponseParser keeps the apps unchanged.
import type { IncomingMessage, Server } from 'node:http';
import { Duplex } from 'node:stream';
import { ErrorCode } from '../protocol/constants.ts';
import { HttpResponseParser } from '../protocol/http-response.ts';
import { httpHeadersFromVars } from '../protocol/uwsgi.ts';
import type { Vars } from '../protocol/vars.ts';
import type { AppExchange } from './exchange.ts';
import { incomingMessage } from './node-adapter.ts';
import { setRawHeaders } from './node-internals.ts';
import type { RequestScope } from './scope.ts';

const MAX_HEAD = 64 * 1024;
/** A tunnel the app has closed waits this long for the client's end before it is reset (ws's own close timeout). */
const LINGER_MS = 30_000;

function resetLingering(ex: AppExchange): void {
  if (!ex.destroyed) ex.reset(ErrorCode.CANCEL);
}
/** A WebSocket close frame from the server (unmasked): code 1001 Going Away. */
const CLOSE_GOING_AWAY = Buffer.from([0x88, 0x02, 0x03, 0xe9]);
// Headers of the in-memory HTTP/1.1 leg that describe that leg only: the RESPONSE carries the
// rest (upgrade, connection, sec-websocket-*, set-cookie) to the proxy, which writes the client's 101.
const LEG_ONLY = new Set(['keep-alive', 'transfer-encoding', 'proxy-connection', 'content-length']);

/**
 * Where the outgoing WebSocket frames end, so a close frame can be slipped in
 * between two frames of the app's (never inside one). Server frames are
 * unmasked but the mask bit is honoured anyway. Hand-written: no library
 * exposes frame boundaries of a byte stream it did not write.
 */
export class WebSocketFrameBoundary {
  private header = Buffer.alloc(14);
  private headerFill = 0;
  private payloadLeft = 0;

  get atBoundary(): boolean {
    return this.headerFill === 0 && this.payloadLeft === 0;
  }

  /**
   * Follows `chunk`; with `stopAtBoundary`, stops at the first frame end inside it and returns
   * how many bytes lead up to it (chunk.length when none ends inside). Otherwise returns chunk.length.
   */
  advance(chunk: Buffer, stopAtBoundary: boolean): number {
    let i = 0;
    const len = chunk.length;
    while (i < len) {
      if (this.payloadLeft > 0) {
        const n = Math.min(this.payloadLeft, len - i);
        this.payloadLeft -= n;
        i += n;
        if (this.payloadLeft === 0 && stopAtBoundary) return i;
        continue;
      }
      this.header[this.headerFill++] = chunk[i++];
      if (this.headerFill < 2) continue;
      const len7 = this.header[1] & 0x7f;
      const need = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (this.header[1] & 0x80 ? 4 : 0);
      if (this.headerFill < need) continue;
      this.payloadLeft = len7 === 126 ? this.header.readUInt16BE(2) : len7 === 127 ? Number(this.header.readBigUInt64BE(2)) : len7;
      this.headerFill = 0;
      if (this.payloadLeft === 0 && stopAtBoundary) return i;
    }
    return len;
  }
}

/** Every open upgraded exchange of this process, for a graceful stop. */
const openTunnels = new Set<UpgradeSocket>();

export function openTunnelCount(): number {
  return openTunnels.size;
}

/**
 * Ends every open tunnel: WebSockets get a close frame with 1001 (Going Away)
 * at the next frame boundary and the server's direction ends; then waits up to
 * `flushMs` for them to close (the client answers the close) before the
 * caller destroys what is left. Other upgraded protocols are ended (END_STREAM).
 */
export async function closeOpenTunnels(flushMs: number): Promise<void> {
  if (openTunnels.size === 0) return;
  for (const t of openTunnels) t.goAway();
  const deadline = Date.now() + flushMs;
  while (openTunnels.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
}

/**
 * The socket handed to an app's 'upgrade' handler (and to ws for Fetch apps).
 * Writable side: the app's HTTP/1.1 answer, parsed into a RESPONSE, then the
 * new protocol's bytes as DATA. Readable side: the client's tunnel bytes.
 */
export class UpgradeSocket extends Duplex {
  remoteAddress: string;
  remotePort: number;
  remoteFamily: string;
  localAddress = '';
  localPort = 0;
  encrypted: boolean | undefined;
  readonly ex: AppExchange;
  private readonly scope: RequestScope;
  private readonly parser: HttpResponseParser;
  private frames: WebSocketFrameBoundary | null = null;
  private pendingWrite: ((err?: Error | null) => void) | null = null;
  private blocked = false;
  /** goAway() was asked while the app was inside a frame: the close frame follows its end. */
  private closeAtBoundary = false;
  /** Our close frame is out: the app's later frames are dropped. */
  private closed1001 = false;
  private tunnel = false;

  constructor(scope: RequestScope) {
    super({ allowHalfOpen: true, writableHighWaterMark: 64 * 1024 });
    const ex = scope.ex;
    this.ex = ex;
    this.scope = scope;
    const head = scope.head;
    this.remoteAddress = head.remoteAddr;
    this.remotePort = head.remotePort;
    this.remoteFamily = head.remoteAddr.includes(':') ? 'IPv6' : 'IPv4';
    this.encrypted = head.scheme === 'https' ? true : undefined;
    this.parser = new HttpResponseParser(
      {
        onHead: (status, _reason, raw) => this.onHead(status, raw),
        onBody: (chunk) => this.forward(chunk),
        onEnd: () => {
          if (!ex.writableEnded && !ex.destroyed) ex.end();
        },
      },
      { upgrade: true, maxHeaderSize: MAX_HEAD },
    );
    openTunnels.add(this);
    ex.on('data', (chunk: Buffer) => {
      if (!this.destroyed && !this.push(chunk)) ex.pause();
    });
    ex.once('end', () => this.push(null));
    ex.on('drain', () => this.release());
    ex.once('close', () => {
      openTunnels.delete(this);
      this.release();
      // The client went away (RST, idle timeout, proxy gone): the app sees its socket close.
      if (!this.destroyed) this.destroy();
    });
  }

  private onHead(status: number, raw: string[]): void {
    const headers: Vars = [];
    let websocket = false;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i].toLowerCase();
      if (status === 101 && name === 'upgrade' && raw[i + 1].toLowerCase() === 'websocket') websocket = true;
      if (!LEG_ONLY.has(name) || (status !== 101 && name === 'content-length')) headers.push(name, raw[i + 1]);
    }
    this.scope.headSent();
    if (this.ex.destroyed) return;
    if (status === 101) {
      this.tunnel = true;
      if (websocket) this.frames = new WebSocketFrameBoundary();
      this.ex.respond(101, headers);
      return;
    }
    // The app declined (ws answers 400 for a bad handshake, engine.io 400 for an unknown transport).
    this.ex.respond(status, headers, { endStream: this.parser.framing === 'none' });
  }

  private forward(chunk: Buffer): void {
    const ex = this.ex;
    if (ex.destroyed || ex.writableEnded || this.closed1001) return;
    if (this.closeAtBoundary && this.frames !== null) {
      const n = this.frames.advance(chunk, true);
      if (n > 0 && !ex.write(n === chunk.length ? chunk : chunk.subarray(0, n))) this.blocked = true;
      if (this.frames.atBoundary) this.sendGoingAway();
      return;
    }
    if (this.frames !== null) this.frames.advance(chunk, false);
    const native = ex as AppExchange & { tryWriteNow?: (c: Buffer) => boolean };
    if (native.tryWriteNow?.(chunk)) return;
    if (!ex.write(chunk)) this.blocked = true;
  }

  /** Graceful stop: a WebSocket gets 1001 between two frames; any other tunnel just ends our direction. */
  goAway(): void {
    if (this.ex.destroyed || this.ex.writableEnded || this.closed1001) return;
    if (!this.tunnel) return; // still a plain exchange: it finishes like any request
    if (this.frames === null) {
      this.ex.end();
      return;
    }
    if (this.frames.atBoundary) this.sendGoingAway();
    else this.closeAtBoundary = true;
  }

  private sendGoingAway(): void {
    this.closed1001 = true;
    this.closeAtBoundary = false;
    this.ex.write(CLOSE_GOING_AWAY);
    this.ex.end();
  }

  private release(): void {
    this.blocked = false;
    const cb = this.pendingWrite;
    this.pendingWrite = null;
    cb?.();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    const err = this.parser.push(chunk);
    if (err) {
      this.scope.limits.log.warn({ err: err.message, url: this.scope.head.target }, 'the app wrote an invalid answer to an upgrade request');
      if (!this.ex.destroyed) this.ex.reset(ErrorCode.INTERNAL_ERROR);
      cb(err);
      return;
    }
    if (this.blocked && !this.ex.destroyed) this.pendingWrite = cb;
    else cb();
  }

  override _final(cb: (err?: Error | null) => void): void {
    const ex = this.ex;
    if (this.tunnel) {
      if (!ex.writableEnded && !ex.destroyed) ex.end();
    } else if (!this.parser.done && !ex.destroyed) {
      // A close-delimited answer ends here; an unfinished head or body is an aborted response.
      const err = this.parser.finish();
      if (err && !ex.destroyed) ex.reset(ErrorCode.INTERNAL_ERROR);
    }
    cb();
  }

  override _read(): void {
    if (this.ex.isPaused()) this.ex.resume();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    openTunnels.delete(this);
    const ex = this.ex;
    if (!ex.destroyed) {
      // A finished answer (a 400 the app wrote, or a tunnel whose server direction has ended: ws
      // destroys its socket after the close handshake) is left to close on its own, the client's
      // remaining bytes dumped; anything else was cut by the app: the client must see an abort.
      if (this.tunnel ? !ex.writableEnded : !this.parser.done) ex.reset(ErrorCode.CANCEL);
      else if (!ex.readableEnded) {
        ex.resume();
        setTimeout(resetLingering, LINGER_MS, ex).unref();
      }
    }
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
  address(): object {
    return {};
  }
}

/** The IncomingMessage of an upgrade request (no body), as node:http hands it to 'upgrade'. */
export function upgradeRequest(scope: RequestScope, socket: UpgradeSocket): IncomingMessage {
  const { head, ex } = scope;
  const req = incomingMessage(socket, head);
  const raw = httpHeadersFromVars(ex.vars);
  setRawHeaders(req, raw);
  req.complete = true;
  req.push(null);
  return req;
}

/** Delivers an upgrade stream to a Node app's http.Server as its 'upgrade' event. */
export function runNodeUpgrade(scope: RequestScope, server: Server): void {
  const socket = new UpgradeSocket(scope);
  const req = upgradeRequest(scope, socket);
  socket.on('error', () => {}); // the app's own handlers see errors; an unhandled one must not crash the worker
  try {
    server.emit('upgrade', req, socket, Buffer.alloc(0));
  } catch (err) {
    socket.destroy();
    scope.appFailed(err);
  }
}
