// The per-process app server: accepts connections, tells native from uwsgi
// classic by the first bytes, runs each request through the app adapter, and
// knows how to stop gracefully. Workers and the in-process mode both use it.
import net, { type Socket } from 'node:net';
import { compileNetworks, validCidr } from '../protocol/trusted-networks.ts';
import { ErrorCode } from '../protocol/constants.ts';
import type { ProtocolError } from '../protocol/errors.ts';
import { detectProtocol, GatewireSession, type GatewireStream } from '../protocol/session.ts';
import type { LoadedApp } from './app.ts';
import { type AppExchange, readRequestHead } from './exchange.ts';
import { runFetch } from './fetch-adapter.ts';
import type { Logger } from './log.ts';
import { runNode } from './node-adapter.ts';
import { NodeInternalsChanged, readWaiting, socketFd } from './node-internals.ts';
import type { ServeOptions } from './options.ts';
import { RequestScope, type ScopeLimits } from './scope.ts';
import { closeOpenTunnels, runNodeUpgrade } from './upgrade.ts';
import { type ConnectionSink, serveUwsgiConnection, type UwsgiContext } from './uwsgi-connection.ts';

/** After the graceful timeout, how long WebSockets closed with 1001 get for the client's close before the rest is destroyed. */
const TUNNEL_CLOSE_FLUSH_MS = 1000;
/** How long a new connection may stay silent before its protocol is known. */
const FIRST_BYTES_TIMEOUT_MS = 10_000;

export interface ServerCounters {
  requests: number;
  inflight: number;
  connections: number;
  sessions: number;
  protocolErrors: number;
}

function noop(): void {}

// Per-connection state and handlers live on the socket and at module level:
// uwsgi classic opens a connection per request, so a closure here is a
// per-request allocation.
const kServer = Symbol('gatewire.server');
const kHead = Symbol('gatewire.firstBytes');
/** performance.now() of the last bytes while the protocol is unknown; -1 once it is known. */
const kActive = Symbol('gatewire.lastActive');
const kSink = Symbol('gatewire.connectionSink');
/** The socket's position in AppServer._sockets. */
const kIndex = Symbol('gatewire.socketIndex');
type AcceptedSocket = Socket & { [kServer]: AppServer; [kHead]: Buffer | null; [kActive]: number; [kSink]: ConnectionSink | null; [kIndex]: number };

function onAcceptedClose(this: AcceptedSocket): void {
  this[kServer]._socketClosed(this);
  this[kSink]?.closed();
}

function protocolUnknown(socket: AcceptedSocket): boolean {
  const head = socket[kHead];
  return head === null || detectProtocol(head) === 'need-more';
}

function onAcceptedData(this: AcceptedSocket, chunk: Buffer): void {
  const sink = this[kSink];
  if (sink !== null) {
    sink.data(chunk);
    return;
  }
  const prev = this[kHead];
  const head = prev === null ? chunk : Buffer.concat([prev, chunk]);
  this[kHead] = head;
  const kind = detectProtocol(head);
  if (kind === 'need-more') {
    this[kActive] = performance.now();
    return;
  }
  const server = this[kServer];
  server._known(this);
  server._route(this, kind, head);
}

function onAcceptedEnd(this: AcceptedSocket): void {
  const sink = this[kSink];
  if (sink !== null) sink.end();
  else if (protocolUnknown(this)) this.destroy();
}

/** Once a second: connections silent for FIRST_BYTES_TIMEOUT_MS before their protocol is known are closed. */
function sweepSilent(server: AppServer): void {
  if (server._awaiting === 0) {
    server._stopSweep();
    return;
  }
  const limit = performance.now() - FIRST_BYTES_TIMEOUT_MS;
  // destroy() closes asynchronously: nothing leaves the list during this walk
  for (const socket of server._sockets) {
    const active = socket[kActive];
    if (active >= 0 && active <= limit) {
      server._known(socket);
      if (protocolUnknown(socket)) socket.destroy();
    }
  }
}

const kOwner = Symbol('gatewire.server.owner');
const kScope = Symbol('gatewire.server.scope');
type OwnedExchange = AppExchange & { [kOwner]: AppServer; [kScope]: RequestScope };

function onExchangeClose(this: OwnedExchange): void {
  this[kOwner]._exchangeClosed();
  this[kScope].exchangeClosed();
}

export class AppServer {
  readonly app: LoadedApp;
  readonly log: Logger;
  readonly counters: ServerCounters = { requests: 0, inflight: 0, connections: 0, sessions: 0, protocolErrors: 0 };
  private readonly opts: ServeOptions;
  private readonly limits: ScopeLimits;
  private readonly allow: ((ip: string) => boolean) | null;
  /**
   * @internal every accepted connection, each holding its index (kIndex):
   * an array with swap-removal, because a Set with one add and one delete per
   * connection (uwsgi: per request) chains its rebuilt tables, and the chain
   * kept every connection alive through young-generation collections.
   */
  readonly _sockets: AcceptedSocket[] = [];
  private readonly sessions = new Set<GatewireSession>();
  private readonly uwsgiCtx: UwsgiContext;
  private readonly listeners: net.Server[] = [];
  private stopping: Promise<void> | null = null;
  /**
   * @internal how many accepted connections have not shown their protocol
   * yet: one sweep timer for all of them instead of an idle timer armed and
   * disarmed on each (uwsgi opens a connection per request).
   */
  _awaiting = 0;
  private sweep: NodeJS.Timeout | null = null;
  private idleWaiter: (() => void) | null = null;
  /** Off only if Node's socket handles lose their `fd` (logged once). */
  private readAtAccept = true;
  /** @internal the read-at-accept path: how often bytes were waiting at accept, or not yet. */
  readonly _readAtAccept = { hits: 0, misses: 0 };
  /** Called after each completed request (max-requests recycling). */
  onRequestDone: ((requests: number) => void) | null = null;

  constructor(app: LoadedApp, opts: ServeOptions, log: Logger) {
    this.app = app;
    this.opts = opts;
    this.log = log;
    this.limits = { timeoutMs: opts.timeout * 1000, maxBody: opts.maxBody, log };
    this.allow = opts.allowFrom.length > 0 ? allowList(opts.allowFrom) : null;
    this.uwsgiCtx = {
      maxBody: opts.maxBody,
      headerTimeoutMs: FIRST_BYTES_TIMEOUT_MS,
      dispatch: (ex) => this.dispatch(ex),
      protocolError: (socket, err) => this.protocolError(socket, err, 'uwsgi'),
    };
  }

  /** A net.Server that hands its connections to this app server (not yet listening). */
  createListener(): net.Server {
    const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => this.accept(socket));
    server.on('error', (err) => this.log.error({ err }, 'listener error'));
    this.listeners.push(server);
    return server;
  }

  accept(socket: Socket): void {
    if (this.stopping) {
      socket.destroy();
      return;
    }
    if (this.allow && socket.remoteAddress !== undefined) {
      const addr = socket.remoteAddress;
      if (!this.allow(addr)) {
        this.log.warn({ remoteAddress: addr, remotePort: socket.remotePort }, 'connection refused by --allow-from');
        socket.destroy();
        return;
      }
    }
    this.counters.connections++;
    const s = socket as AcceptedSocket;
    s[kIndex] = this._sockets.length;
    this._sockets.push(s);
    s[kServer] = this;
    s[kHead] = null;
    s[kActive] = performance.now();
    this._awaiting++;
    if (this.sweep === null) {
      this.sweep = setInterval(sweepSilent, 1000, this);
      this.sweep.unref();
    }
    s[kSink] = null;
    socket.on('close', onAcceptedClose);
    socket.on('error', noop);
    socket.on('data', onAcceptedData);
    socket.on('end', onAcceptedEnd);
    // What the front already sent is read now, not after a turn of the event
    // loop: a uwsgi request whose app answers synchronously is served and its
    // connection closed before the socket is ever registered with epoll.
    if (this.readAtAccept) {
      const first = this.waitingBytes(socket);
      if (first !== null) onAcceptedData.call(s, first);
    }
  }

  private waitingBytes(socket: Socket): Buffer | null {
    let fd: number;
    try {
      fd = socketFd(socket);
    } catch (err) {
      if (!(err instanceof NodeInternalsChanged)) throw err;
      this.readAtAccept = false;
      this.log.error({ err }, 'reading at accept is off: connections cost an extra turn of the event loop');
      return null;
    }
    if (fd < 0) return null;
    const bytes = readWaiting(fd);
    if (bytes === null) this._readAtAccept.misses++;
    else this._readAtAccept.hits++;
    return bytes;
  }

  /** @internal the protocol of `socket` is known from `head` (its first bytes). */
  _route(socket: AcceptedSocket, kind: 'native' | 'uwsgi', head: Buffer): void {
    if (kind === 'uwsgi') {
      socket[kSink] = serveUwsgiConnection(socket, head, this.uwsgiCtx);
      return;
    }
    // The session reads the socket itself from now on.
    socket.off('data', onAcceptedData);
    socket.off('end', onAcceptedEnd);
    this.startSession(socket, head);
  }

  /** @internal */
  _stopSweep(): void {
    if (this.sweep !== null) clearInterval(this.sweep);
    this.sweep = null;
  }

  /** @internal the protocol of `socket` is known (or it is given up on). */
  _known(socket: AcceptedSocket): void {
    if (socket[kActive] < 0) return;
    socket[kActive] = -1;
    this._awaiting--;
  }

  /** @internal */
  _socketClosed(socket: AcceptedSocket): void {
    this._known(socket);
    const sockets = this._sockets;
    const i = socket[kIndex];
    if (sockets[i] !== socket) return;
    const last = sockets.pop()!;
    if (last !== socket) {
      sockets[i] = last;
      last[kIndex] = i;
    }
    this.counters.connections--;
    this.checkIdle();
  }

  private startSession(socket: Socket, head: Buffer): void {
    const session = new GatewireSession(socket, { role: 'server', maxConcurrentStreams: this.opts.maxStreams }, head);
    this.sessions.add(session);
    this.counters.sessions++;
    session.on('stream', (stream: GatewireStream) => this.dispatch(stream));
    session.on('error', (err: ProtocolError | Error) => this.protocolError(socket, err, 'native'));
    session.once('close', () => {
      this.sessions.delete(session);
      this.counters.sessions--;
      this.checkIdle();
    });
    if (this.stopping) session.goaway(ErrorCode.NO_ERROR, 'server shutting down');
  }

  private protocolError(socket: Socket, err: ProtocolError | Error, protocol: 'uwsgi' | 'native'): void {
    this.counters.protocolErrors++;
    const e = err as ProtocolError;
    this.log.warn({ protocol, code: e.codeName ?? (err as NodeJS.ErrnoException).code, remoteAddress: socket.remoteAddress ?? 'unix', msg: err.message }, 'connection closed: protocol error');
  }

  dispatch(ex: AppExchange): void {
    const counters = this.counters;
    counters.inflight++;
    (ex as OwnedExchange)[kOwner] = this;
    ex.on('error', noop);
    ex.on('close', onExchangeClose);
    const head = readRequestHead(ex.vars, ex.protocol);
    const scope = new RequestScope(ex, head, this.limits);
    // 'close' is never emitted synchronously: the scope is there before onExchangeClose runs.
    (ex as OwnedExchange)[kScope] = scope;
    if (head.contentLength > this.opts.maxBody) {
      this.log.warn({ method: head.method, url: head.target, contentLength: head.contentLength }, 'request body over --max-body: 413');
      scope.replyError(413, 'Payload Too Large\n');
      return;
    }
    if (this.app.kind === 'fetch') runFetch(scope, this.app.fetch);
    else if (ex.upgrade === true && this.app.server !== undefined && this.app.server.listenerCount('upgrade') > 0) runNodeUpgrade(scope, this.app.server);
    else runNode(scope, this.app.listener);
  }

  /** @internal an exchange dispatch() started has closed. */
  _exchangeClosed(): void {
    const counters = this.counters;
    counters.inflight--;
    counters.requests++;
    this.onRequestDone?.(counters.requests);
    this.checkIdle();
  }

  private checkIdle(): void {
    if (this.idleWaiter && this.counters.inflight === 0 && this.sessions.size === 0 && this._sockets.length === 0) this.idleWaiter();
  }

  /**
   * Graceful stop: stop accepting, GOAWAY every native session, let every
   * in-flight request (and every connection whose request is still arriving)
   * finish, bounded by graceMs; then whatever is left is destroyed.
   */
  stop(graceMs: number): Promise<void> {
    if (this.stopping) return this.stopping;
    this.stopping = (async () => {
      for (const l of this.listeners) l.close();
      for (const s of this.sessions) s.goaway(ErrorCode.NO_ERROR, 'server shutting down');
      const idle = new Promise<void>((resolve) => {
        this.idleWaiter = resolve;
      });
      this.checkIdle();
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), graceMs);
      });
      const late = await Promise.race([idle.then(() => false), timedOut]);
      clearTimeout(timer);
      if (late) {
        this.log.warn({ inflight: this.counters.inflight, connections: this._sockets.length }, 'graceful timeout: closing the remaining connections');
        // WebSockets still open get a close frame with 1001 (Going Away) before their connection goes.
        await closeOpenTunnels(TUNNEL_CLOSE_FLUSH_MS);
        for (const s of this.sessions) s.destroy();
        for (const s of this._sockets.slice()) s.destroy();
      }
    })();
    return this.stopping;
  }
}

/** --allow-from, read as the proxy reads trust_proxy (protocol/trusted-networks.ts). */
function allowList(cidrs: string[]): (ip: string) => boolean {
  for (const c of cidrs) if (!validCidr(c)) throw new Error(`--allow-from: '${c}' is not an IP address or CIDR`);
  return compileNetworks(cidrs);
}
