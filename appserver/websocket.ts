// WebSockets for Fetch apps: `info.upgradeWebSocket(request, { protocol,
// idleTimeout })` returns `{ socket, response }` as Deno.upgradeWebSocket does.
// The app returns `response` (status 101); the handshake, the framing,
// permessage-deflate, ping/pong and the close handshake are the `ws`
// library's (a WebSocketServer in noServer mode, one per process). What is
// written here is the glue: the standard WebSocket-shaped object the app holds
// (EventTarget, readyState, binaryType 'blob' | 'arraybuffer', send/close) and
// the idle check.
import type { IncomingMessage } from 'node:http';
import { createRequire } from 'node:module';
import type { RawData, WebSocket as WsSocket, WebSocketServer } from 'ws';
import type { Vars } from '../protocol/vars.ts';
import type { RequestScope } from './scope.ts';
import { UpgradeSocket, upgradeRequest } from './upgrade.ts';

export interface UpgradeWebSocketOptions {
  /** The subprotocol to accept (one the client offered in Sec-WebSocket-Protocol); none when absent. */
  protocol?: string;
  /** Seconds without a message or pong before the socket is pinged, and closed if the pong does not come as long again; 0 disables. Default 30 (Deno's). */
  idleTimeout?: number;
}

export interface UpgradeWebSocketResult {
  socket: GatewireWebSocket;
  response: Response;
}

const kProtocol = Symbol('gatewire.wsProtocol');
const kHeaders = Symbol('gatewire.wsHeaders');
type HandshakeRequest = IncomingMessage & { [kProtocol]?: string; [kHeaders]?: Vars };

let server: WebSocketServer | null = null;
/** `ws`, loaded on the first WebSocket: a worker that never sees one does not carry it. */
let wsLib: typeof import('ws') | null = null;
function wsModule(): typeof import('ws') {
  wsLib ??= createRequire(import.meta.url)('ws') as typeof import('ws');
  return wsLib;
}
const OPEN = 1; // WebSocket.OPEN

/** The one ws server of this process: subprotocol and extra headers come from the request being handled. */
function wsServer(): WebSocketServer {
  if (server !== null) return server;
  server = new (wsModule().WebSocketServer)({
    noServer: true,
    clientTracking: false,
    perMessageDeflate: true,
    maxPayload: 100 * 1024 * 1024,
    handleProtocols: (offered, req) => {
      const want = (req as HandshakeRequest)[kProtocol];
      return want !== undefined && offered.has(want) ? want : false;
    },
  });
  server.on('headers', (headers: string[], req: IncomingMessage) => {
    const extra = (req as HandshakeRequest)[kHeaders];
    if (extra) for (let i = 0; i < extra.length; i += 2) headers.push(`${extra[i]}: ${extra[i + 1]}`);
  });
  return server;
}

interface PendingUpgrade {
  scope: RequestScope;
  socket: GatewireWebSocket;
  protocol: string | undefined;
  idleTimeout: number;
}

const pending = new WeakMap<Response, PendingUpgrade>();

// The handshake headers ws writes itself; the app's own ones (Set-Cookie…) ride along.
const HANDSHAKE_HEADERS = new Set(['upgrade', 'connection', 'sec-websocket-accept', 'sec-websocket-protocol', 'sec-websocket-extensions', 'content-length', 'transfer-encoding']);

function notAnUpgrade(): never {
  throw new TypeError("upgradeWebSocket: this request is not a WebSocket upgrade (it needs 'Upgrade: websocket' and 'Connection: Upgrade', arriving through gatewire proxy)");
}

/** info.upgradeWebSocket for a request that did not ask for an upgrade: always throws, as Deno's does. */
export function refuseUpgradeWebSocket(_request: Request, _opts?: UpgradeWebSocketOptions): UpgradeWebSocketResult {
  return notAnUpgrade();
}

/** info.upgradeWebSocket for an upgrade stream. */
export function upgradeWebSocketFor(scope: RequestScope): (request: Request, opts?: UpgradeWebSocketOptions) => UpgradeWebSocketResult {
  let used = false;
  return (request, opts = {}) => {
    const h = request.headers;
    if (!/\bwebsocket\b/i.test(h.get('upgrade') ?? '') || request.method !== 'GET') notAnUpgrade();
    if (used) throw new TypeError('upgradeWebSocket: this request was already upgraded');
    used = true;
    const socket = new GatewireWebSocket(request.url, opts.protocol ?? '');
    const response = new Response(null, { status: 200 });
    // A Response cannot be constructed with 101 (the Fetch standard's range is 200–599); this one is
    // only ever read by gatewire, which writes the real 101.
    Object.defineProperty(response, 'status', { value: 101 });
    Object.defineProperty(response, 'statusText', { value: 'Switching Protocols' });
    pending.set(response, { scope, socket, protocol: opts.protocol, idleTimeout: opts.idleTimeout ?? 30 });
    return { socket, response };
  };
}

/** Called with the app's answer: true when it is the response of upgradeWebSocket(), whose handshake then runs. */
export function acceptWebSocket(scope: RequestScope, res: Response): boolean {
  const p = pending.get(res);
  if (p === undefined || p.scope !== scope) return false;
  pending.delete(res);
  const extra: Vars = [];
  let cookies = false;
  res.headers.forEach((value, name) => {
    if (name === 'set-cookie') cookies = true;
    else if (!HANDSHAKE_HEADERS.has(name)) extra.push(name, value);
  });
  if (cookies) for (const c of res.headers.getSetCookie()) extra.push('set-cookie', c);
  const tunnel = new UpgradeSocket(scope);
  tunnel.on('error', () => {});
  const req = upgradeRequest(scope, tunnel) as HandshakeRequest;
  req[kProtocol] = p.protocol;
  req[kHeaders] = extra;
  wsServer().handleUpgrade(req, tunnel, Buffer.alloc(0), (ws) => p.socket._attach(ws, p.idleTimeout));
  // A handshake ws refused (bad key or version) was answered 400 on the tunnel: the app's socket fails.
  tunnel.once('close', () => p.socket._failIfConnecting());
  return true;
}

// Node 22+ has CloseEvent as a global (with its WebSocket client); Node 20 does not.
export class GatewireCloseEvent extends Event {
  readonly code: number;
  readonly reason: string;
  readonly wasClean: boolean;
  constructor(type: string, init: { code: number; reason: string; wasClean: boolean }) {
    super(type);
    this.code = init.code;
    this.reason = init.reason;
    this.wasClean = init.wasClean;
  }
}
const CloseEventClass: typeof GatewireCloseEvent = (globalThis as unknown as { CloseEvent?: typeof GatewireCloseEvent }).CloseEvent ?? GatewireCloseEvent;

type Handler = ((ev: Event) => unknown) | null;

/** The server end of a WebSocket, shaped like the standard WebSocket (and Deno's server socket). */
export class GatewireWebSocket extends EventTarget {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;
  readonly CONNECTING = 0;
  readonly OPEN = 1;
  readonly CLOSING = 2;
  readonly CLOSED = 3;
  readonly url: string;
  private _protocol: string;
  private _extensions = '';
  private _readyState = 0;
  private _binaryType: 'blob' | 'arraybuffer' = 'blob';
  private ws: WsSocket | null = null;
  private handlers: Record<string, Handler> = { open: null, message: null, close: null, error: null };
  private idleTimer: NodeJS.Timeout | null = null;
  private heardFrom = true;
  /** Sends queued behind a Blob being read, so messages keep their order. */
  private sendChain: Promise<void> | null = null;

  constructor(url: string, protocol: string) {
    super();
    this.url = url.replace(/^http/, 'ws');
    this._protocol = protocol;
  }

  get readyState(): number {
    return this._readyState;
  }
  get protocol(): string {
    return this._protocol;
  }
  get extensions(): string {
    return this._extensions;
  }
  get bufferedAmount(): number {
    return this.ws?.bufferedAmount ?? 0;
  }
  get binaryType(): 'blob' | 'arraybuffer' {
    return this._binaryType;
  }
  set binaryType(v: 'blob' | 'arraybuffer') {
    if (v === 'blob' || v === 'arraybuffer') this._binaryType = v;
  }

  get onopen(): Handler {
    return this.handlers.open;
  }
  set onopen(fn: Handler) {
    this.setHandler('open', fn);
  }
  get onmessage(): ((ev: MessageEvent) => unknown) | null {
    return this.handlers.message;
  }
  set onmessage(fn: ((ev: MessageEvent) => unknown) | null) {
    this.setHandler('message', fn as Handler);
  }
  get onclose(): ((ev: GatewireCloseEvent) => unknown) | null {
    return this.handlers.close;
  }
  set onclose(fn: ((ev: GatewireCloseEvent) => unknown) | null) {
    this.setHandler('close', fn as Handler);
  }
  get onerror(): Handler {
    return this.handlers.error;
  }
  set onerror(fn: Handler) {
    this.setHandler('error', fn);
  }

  private setHandler(type: string, fn: Handler): void {
    this.handlers[type] = typeof fn === 'function' ? fn : null;
  }

  override dispatchEvent(event: Event): boolean {
    const result = super.dispatchEvent(event);
    const h = this.handlers[event.type];
    if (h) {
      try {
        h.call(this, event);
      } catch (err) {
        process.nextTick(() => {
          throw err;
        });
      }
    }
    return result;
  }

  send(data: string | ArrayBufferLike | ArrayBufferView | Blob): void {
    if (this._readyState === 0) throw new DOMException('send() before the WebSocket is open', 'InvalidStateError');
    const ws = this.ws;
    if (this._readyState !== 1 || ws === null) return; // the standard drops sends on a closing socket
    if (typeof data === 'string') this.sendNow(data);
    else if (data instanceof Blob) {
      const bytes = data.arrayBuffer();
      this.sendChain = (this.sendChain ?? Promise.resolve()).then(async () => this.ws?.send(new Uint8Array(await bytes), { binary: true }));
      return;
    } else if (ArrayBuffer.isView(data)) this.sendNow(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), true);
    else this.sendNow(new Uint8Array(data as ArrayBuffer), true);
  }

  private sendNow(data: string | Uint8Array, binary = false): void {
    if (this.sendChain !== null) {
      this.sendChain = this.sendChain.then(() => this.ws?.send(data, { binary }));
      return;
    }
    this.ws!.send(data, { binary });
  }

  close(code?: number, reason?: string): void {
    if (code !== undefined && code !== 1000 && !(code >= 3000 && code <= 4999)) {
      throw new DOMException(`close code ${code} is neither 1000 nor in 3000–4999`, 'InvalidAccessError');
    }
    if (reason !== undefined && Buffer.byteLength(reason) > 123) throw new DOMException('close reason longer than 123 bytes', 'SyntaxError');
    if (this._readyState >= 2) return;
    this._readyState = 2;
    this.ws?.close(code, reason);
  }

  /** @internal the handshake is done: the ws socket carries the frames from now on. */
  _attach(ws: WsSocket, idleTimeoutS: number): void {
    this.ws = ws;
    this._protocol = ws.protocol;
    this._extensions = ws.extensions;
    ws.binaryType = 'nodebuffer';
    ws.on('message', (data: RawData, isBinary: boolean) => {
      this.heardFrom = true;
      const buf = data as Buffer;
      let payload: string | Blob | ArrayBuffer;
      if (!isBinary) payload = buf.toString('utf8');
      else if (this._binaryType === 'blob') payload = new Blob([buf as Uint8Array<ArrayBuffer>]);
      else payload = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength) as ArrayBuffer;
      this.dispatchEvent(new MessageEvent('message', { data: payload, origin: new URL(this.url).origin }));
    });
    ws.on('pong', () => {
      this.heardFrom = true;
    });
    ws.on('error', () => {
      this.dispatchEvent(new Event('error'));
    });
    ws.once('close', (code: number, reason: Buffer) => {
      this.stopIdle();
      this._readyState = 3;
      this.dispatchEvent(new CloseEventClass('close', { code, reason: reason.toString('utf8'), wasClean: code !== 1006 }));
    });
    if (idleTimeoutS > 0) {
      this.idleTimer = setInterval(idleTick, idleTimeoutS * 1000, this);
      this.idleTimer.unref();
    }
    const closeEarly = this._readyState === 2;
    this._readyState = 1;
    this.dispatchEvent(new Event('open'));
    if (closeEarly) {
      this._readyState = 2;
      ws.close();
    }
  }

  /** @internal the tunnel closed before the handshake completed (refused by ws, or the client left). */
  _failIfConnecting(): void {
    if (this.ws !== null || this._readyState === 3) return;
    this._readyState = 3;
    this.dispatchEvent(new Event('error'));
    this.dispatchEvent(new CloseEventClass('close', { code: 1006, reason: '', wasClean: false }));
  }

  /** @internal */
  _idleTick(): void {
    const ws = this.ws;
    if (ws === null || ws.readyState !== OPEN) return;
    if (!this.heardFrom) {
      // Neither a message nor the pong to our last ping for a whole idle period: the peer is gone.
      this.dispatchEvent(new Event('error'));
      ws.terminate();
      return;
    }
    this.heardFrom = false;
    ws.ping();
  }

  private stopIdle(): void {
    if (this.idleTimer !== null) {
      clearInterval(this.idleTimer);
      this.idleTimer = null;
    }
  }
}

function idleTick(s: GatewireWebSocket): void {
  s._idleTick();
}
