// gatewire native upstreams: persistent multiplexed GatewireSessions per host
// (at most connections_per_server), opened lazily and kept. A request goes to
// the least-loaded usable session; while every session is busy and the limit
// allows, one more connection is opened in the background (the request does
// not wait for it). Sessions that got GOAWAY take no new streams; streams they
// never processed fail as retryable and the exchange sends them elsewhere.
// Idle sessions are PINGed and destroyed without an ACK (dead peers behind a
// NAT or a frozen process).
import net from 'node:net';
import type { Readable } from 'node:stream';
import { DEFAULT_MAX_CONCURRENT_STREAMS, ErrorCode, MAX_VARS_SIZE } from '../../protocol/constants.ts';
import { GatewireSession, type GatewireStream, StreamResetError } from '../../protocol/session.ts';
import { type Vars, varsSize } from '../../protocol/vars.ts';
import type { UpstreamConfig } from '../config.ts';
import { BodyTooLargeError, ClientAbortedError, connectError, HeadersTooLargeError, protocolFailure, refusedStream, type UpstreamError } from '../errors.ts';
import type { Host } from '../hosts.ts';
import { HostQueue, PHASE_BODY, PHASE_DONE, PHASE_HEAD, PHASE_QUEUED, TimeoutSweeper, TransportExchange } from './base.ts';
import { headersFromVars, requestVars, type Transport, type TransportRequest, type TransportResponse, wholeBodyLength } from './transport.ts';

/** Idle sessions are pinged this often; a PING unanswered for pingTimeout kills the session. */
const PING_INTERVAL_MS = 5000;

const EMPTY_BODY = Buffer.alloc(0);

const kExchange = Symbol('gatewire.exchange');
const kHostSessions = Symbol('gatewire.hostSessions');
type TunnelStream = GatewireStream & { [kHostSessions]?: HostSessions };
function onTunnelStreamClose(this: TunnelStream): void {
  const hs = this[kHostSessions];
  if (hs !== undefined) hs.tunnels--;
}
type TaggedStream = GatewireStream & { [kExchange]?: GatewireExchange };

/** What waits for a session with a free stream: an exchange, or a tunnel being opened. */
interface SessionWaiter {
  start(session: GatewireSession): void;
  abort(err: UpstreamError): void;
}

class HostSessions {
  readonly sessions: GatewireSession[] = [];
  connecting = 0;
  /** Upgrade streams (tunnels) open or being opened on this host's sessions. */
  tunnels = 0;
  readonly waiting = new HostQueue<SessionWaiter>();
  closed = false;
  readonly host: Host;
  constructor(host: Host) {
    this.host = host;
  }

  /** The usable session with the fewest active streams, or null. */
  leastLoaded(): GatewireSession | null {
    let best: GatewireSession | null = null;
    let bestActive = Number.POSITIVE_INFINITY;
    const sessions = this.sessions;
    for (let i = 0; i < sessions.length; i++) {
      const s = sessions[i];
      if (s.availableStreams <= 0) continue;
      const active = s.activeStreams;
      if (active < bestActive) {
        best = s;
        bestActive = active;
      }
    }
    return best;
  }
}

export class GatewireTransport implements Transport {
  readonly sweeper = new TimeoutSweeper<GatewireExchange>();
  private readonly hosts = new Map<Host, HostSessions>();
  private readonly pingTimeoutMs: number;

  readonly cfg: UpstreamConfig;
  constructor(cfg: UpstreamConfig) {
    this.cfg = cfg;
    this.pingTimeoutMs = Math.min(10_000, Math.max(1000, cfg.timeouts.read_ms));
  }

  request(host: Host, req: TransportRequest): Promise<TransportResponse> {
    return new Promise((resolve, reject) => {
      if (req.signal.aborted) {
        reject(new ClientAbortedError());
        return;
      }
      const vars = requestVars(req);
      // REQUEST carries the vars in one frame: headers beyond it are the client's 431
      const size = varsSize(vars);
      if (size > MAX_VARS_SIZE || size < 0) {
        reject(new HeadersTooLargeError(`vars block over ${MAX_VARS_SIZE} bytes`));
        return;
      }
      const ex = new GatewireExchange(this, host, req, vars, resolve, reject);
      this.sweeper.add(ex);
      this.place(this.entry(host), ex);
    });
  }

  private entry(host: Host): HostSessions {
    let hs = this.hosts.get(host);
    if (hs === undefined) {
      hs = new HostSessions(host);
      this.hosts.set(host, hs);
    }
    return hs;
  }

  private canGrow(hs: HostSessions): boolean {
    const open = hs.sessions.length + hs.connecting;
    // Tunnels hold their streams for as long as a WebSocket lives: the connections they fill
    // do not count against connections_per_server, so they never starve ordinary requests.
    return open < this.cfg.connections_per_server + Math.ceil(hs.tunnels / DEFAULT_MAX_CONCURRENT_STREAMS) || open === 0;
  }

  /**
   * An upgrade stream (PROTOCOL.md 4.3) for a tunnel: on a session with a free stream (tunnels
   * fill one connection before another is opened), or on a new connection when none has one.
   * Fails with the connection's error (retryable when it never connected).
   */
  openUpgradeStream(host: Host, vars: Vars): Promise<GatewireStream> {
    return new Promise((resolve, reject) => {
      const hs = this.entry(host);
      hs.tunnels++;
      let settled = false;
      const waiter: SessionWaiter = {
        start(session) {
          if (settled) return;
          settled = true;
          const stream = session.request(vars, { upgrade: true }) as TunnelStream;
          // one shared listener, no closure: an idle tunnel's memory is a budget (≤ 8 KiB in the proxy)
          stream[kHostSessions] = hs;
          stream.on('close', onTunnelStreamClose);
          resolve(stream);
        },
        abort(err) {
          if (settled) return;
          settled = true;
          hs.tunnels--;
          reject(err);
        },
      };
      const best = hs.leastLoaded();
      if (best !== null) {
        waiter.start(best);
        return;
      }
      hs.waiting.push(waiter);
      if (hs.connecting * DEFAULT_MAX_CONCURRENT_STREAMS < hs.waiting.length && this.canGrow(hs)) this.connect(hs);
    });
  }

  /** Puts an exchange on the least-loaded session, or queues it for one. */
  private place(hs: HostSessions, ex: GatewireExchange): void {
    const best = hs.leastLoaded();
    if (best !== null) {
      // all busy: grow towards the limit for the next requests
      if (best.activeStreams > 0 && this.canGrow(hs)) this.connect(hs);
      ex.start(best);
      return;
    }
    hs.waiting.push(ex);
    if (this.canGrow(hs)) this.connect(hs);
  }

  private connect(hs: HostSessions): void {
    hs.connecting++;
    const target = hs.host.target;
    const socket = target.kind === 'unix' ? net.connect(target.path) : net.connect(target.port, target.host);
    const timer = setTimeout(() => socket.destroy(Object.assign(new Error('connect timeout'), { code: 'ETIMEDOUT' })), this.cfg.timeouts.connect_ms);
    socket.once('error', (err) => {
      clearTimeout(timer);
      hs.connecting--;
      // every exchange waiting for a connection fails; they never reached the app
      for (const ex of hs.waiting.takeAll()) ex.abort(connectError(err, true));
    });
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      hs.connecting--;
      if (hs.closed) {
        socket.destroy();
        return;
      }
      const session = new GatewireSession(socket, { role: 'client', pingIntervalMs: PING_INTERVAL_MS, pingTimeoutMs: this.pingTimeoutMs });
      session.on('error', () => {}); // connection errors surface on the streams; the session closes itself
      session.once('close', () => {
        const i = hs.sessions.indexOf(session);
        if (i >= 0) hs.sessions.splice(i, 1);
        this.serveWaiting(hs);
      });
      session.on('goaway', () => this.serveWaiting(hs));
      hs.sessions.push(session);
      this.serveWaiting(hs);
    });
  }

  /** Capacity appeared (new session, a stream ended, a session left): serve the waiting exchanges in order. */
  private serveWaiting(hs: HostSessions): void {
    while (hs.waiting.length > 0) {
      const best = hs.leastLoaded();
      if (best === null) {
        if (hs.closed) for (const ex of hs.waiting.takeAll()) ex.abort(connectError(new Error('upstream host removed'), true));
        else if (this.canGrow(hs)) this.connect(hs);
        return;
      }
      (hs.waiting.shift() as SessionWaiter).start(best);
    }
  }

  /** An exchange of `host` ended (or left the queue). */
  released(ex: GatewireExchange, queued: boolean): void {
    this.sweeper.delete(ex);
    const hs = this.hosts.get(ex.host);
    if (hs === undefined) return;
    if (queued) hs.waiting.remove(ex);
    else if (hs.waiting.length > 0) this.serveWaiting(hs);
  }

  closeHost(host: Host): void {
    const hs = this.hosts.get(host);
    if (hs === undefined) return;
    hs.closed = true;
    this.hosts.delete(host);
    for (const s of hs.sessions) void s.close();
  }

  async close(force = false): Promise<void> {
    const all: Promise<void>[] = [];
    for (const hs of this.hosts.values()) {
      hs.closed = true;
      for (const s of hs.sessions) {
        if (force) s.destroy();
        else all.push(s.close());
      }
    }
    this.hosts.clear();
    await Promise.all(all);
    this.sweeper.stop();
  }
}

/** A response head; with takeWholeBody for a body that arrived whole by the time the head was handed over. */
class GatewireResponse implements TransportResponse {
  readonly statusCode: number;
  readonly headers: Record<string, string | string[]>;
  readonly body: GatewireStream;
  private readonly exchange: GatewireExchange;
  constructor(statusCode: number, headers: Record<string, string | string[]>, body: GatewireStream, exchange: GatewireExchange) {
    this.statusCode = statusCode;
    this.headers = headers;
    this.body = body;
    this.exchange = exchange;
  }

  takeWholeBody(expectedLength: number): Buffer | null {
    return this.exchange.takeWholeBody(expectedLength);
  }
}

function answerSoon(ex: GatewireExchange): void {
  ex.answer(false);
}
function answerLate(ex: GatewireExchange): void {
  ex.answer(true);
}
function onStreamResponse(this: TaggedStream, status: number, headers: Vars): void {
  this[kExchange]?.onResponse(status, headers);
}
function onStreamError(this: TaggedStream, err: Error): void {
  this[kExchange]?.onStreamError(err);
}
function onStreamClose(this: TaggedStream): void {
  this[kExchange]?.onStreamClose();
}
function onBodyError(this: Readable & { [kExchange]?: GatewireExchange }, err: Error): void {
  const e = err as UpstreamError;
  this[kExchange]?.abort(e.code === 'GW_BODY_TOO_LARGE' || e.code === 'GW_BODY_TIMEOUT' ? e : (new ClientAbortedError() as UpstreamError));
}

class GatewireExchange extends TransportExchange {
  private stream: TaggedStream | null = null;
  /** The response head, between its arrival and answer(). */
  private pending: GatewireResponse | null = null;
  private readonly transport: GatewireTransport;
  private readonly vars: Vars;

  constructor(transport: GatewireTransport, host: Host, req: TransportRequest, vars: Vars, resolve: (res: TransportResponse) => void, reject: (err: Error) => void) {
    super(host, req, resolve, reject);
    this.transport = transport;
    this.vars = vars;
  }

  start(session: GatewireSession): void {
    if (this.phase !== PHASE_QUEUED) return;
    this.phase = PHASE_HEAD;
    this.touch();
    const req = this.req;
    const body = req.body;
    const whole = req.bodyBuffer;
    const stream = session.request(this.vars, { endStream: body === null && whole === null }) as TaggedStream;
    this.stream = stream;
    stream[kExchange] = this;
    stream.on('response', onStreamResponse);
    stream.on('error', onStreamError);
    stream.on('close', onStreamClose);
    // REQUEST and DATA(END) leave in the same write; the buffer stays with the request for a replay
    if (whole !== null) stream.end(whole);
    else if (body !== null) {
      (body as Readable & { [kExchange]?: GatewireExchange })[kExchange] = this;
      body.once('data', () => {
        req.bodyStarted = true;
      });
      body.on('error', onBodyError);
      body.pipe(stream);
    }
  }

  onResponse(status: number, headers: Vars): void {
    if (this.phase !== PHASE_HEAD || this.pending !== null) return;
    this.touch();
    this.pending = new GatewireResponse(status, headersFromVars(headers), this.stream as GatewireStream, this);
    // the DATA that came in the same read are delivered once its frames are decoded: answer then
    process.nextTick(answerSoon, this);
  }

  /**
   * Hands the pending head over. A small framed body (wholeBodyLength) that has not ended yet gets
   * until the end of this event-loop iteration's poll phase (libuv reads a socket again and again
   * while it has data): a 64 KiB body split over two socket reads then still reaches the client
   * with its head in one write. A body still not complete by then streams, so a slow response is
   * never held back (NGINX sends the head as soon as it has it, too).
   */
  answer(late: boolean): void {
    const res = this.pending;
    if (res === null || this.phase !== PHASE_HEAD) return;
    const stream = res.body;
    if (!late && !stream.complete) {
      const length = wholeBodyLength(this.req.method, res.statusCode, res.headers);
      if (length > 0 && stream.readableLength < length) {
        setImmediate(answerLate, this);
        return;
      }
    }
    this.pending = null;
    this.phase = PHASE_BODY;
    this.respond(res);
  }

  /**
   * The body when it is complete: END_STREAM received, the stream closed both ways, nothing read
   * yet, exactly `expectedLength` bytes buffered. The exchange is then over.
   */
  takeWholeBody(expectedLength: number): Buffer | null {
    const stream = this.stream;
    if (this.phase !== PHASE_BODY || stream === null || !stream.complete || stream.destroyed) return null;
    if (stream.readableFlowing !== null || stream.readableLength !== expectedLength) return null;
    // read() hands over everything buffered (and lets the stream end and close on its own)
    const body = stream.read() as Buffer | null;
    this.end(false);
    return body ?? EMPTY_BODY;
  }

  onStreamError(err: Error): void {
    // before the head was handed over (even when it arrived): the try fails, and may be retried
    if (this.phase === PHASE_HEAD || this.phase === PHASE_QUEUED) this.abort(mapStreamError(err));
    else this.end(true);
  }

  onStreamClose(): void {
    if (this.phase === PHASE_DONE) return;
    if (this.pending !== null) this.answer(true);
    // closed without a response and without an error
    else if (this.phase === PHASE_HEAD) this.abort(protocolFailure(new Error('stream closed without a response')));
    else this.end(false);
  }

  protected override release(broken: boolean): void {
    const stream = this.stream;
    const queued = stream === null;
    if (stream !== null) {
      stream[kExchange] = undefined;
      if (broken && !stream.destroyed) stream.reset(ErrorCode.CANCEL);
    }
    const body = this.req.body as (Readable & { [kExchange]?: GatewireExchange }) | null;
    if (body !== null && body[kExchange] === this) {
      body[kExchange] = undefined;
      body.removeListener('error', onBodyError);
      if (stream !== null) body.unpipe(stream);
    }
    this.transport.released(this, queued);
  }

  protected override responseBody(): Readable | null {
    return this.stream;
  }

  protected override upstreamProgress(): number {
    return this.stream?.bodyReceived ?? 0;
  }

  protected override waitingForClient(): boolean {
    return (this.stream?.readableLength ?? 0) > 0;
  }

  protected override sendBlocked(): boolean {
    return this.stream?.sendStalled === true;
  }
}

function mapStreamError(err: Error): UpstreamError {
  if (err instanceof StreamResetError) {
    if (err.retryable) return refusedStream(err);
    if (err.code === ErrorCode.BODY_TOO_LARGE) return new BodyTooLargeError('the upstream limit') as UpstreamError;
    if (err.code === ErrorCode.VARS_TOO_LARGE) return new HeadersTooLargeError('the upstream limit') as UpstreamError;
    // connection lost with the request on the wire: maybe processed; the host failed
    if (!err.remote) return connectError(err, false);
    return protocolFailure(err, false);
  }
  const code = (err as UpstreamError).code;
  if (typeof code === 'string' && code.startsWith('GW_')) return err as UpstreamError;
  return protocolFailure(err);
}
