// gatewire native upstreams: persistent multiplexed GatewireSessions per host
// (at most connections_per_server), opened lazily and kept. A request goes to
// the least-loaded usable session; while every session is busy and the limit
// allows, one more connection is opened in the background (the request does
// not wait for it). Sessions that got GOAWAY take no new streams; streams they
// never processed fail as retryable and the dispatcher sends them elsewhere.
// Idle sessions are PINGed and destroyed without an ACK (dead peers behind a
// NAT or a frozen process); read timeouts are enforced by one coarse sweeper.
import net from 'node:net';
import type { Readable } from 'node:stream';
import { ErrorCode, MAX_VARS_SIZE } from '../../protocol/constants.ts';
import { GatewireSession, type GatewireStream, StreamResetError } from '../../protocol/session.ts';
import { type Vars, varsSize } from '../../protocol/vars.ts';
import type { UpstreamConfig } from '../config.ts';
import {
  BodyTooLargeError,
  ClientAbortedError,
  connectError,
  HeadersTooLargeError,
  protocolFailure,
  refusedStream,
  timeoutError,
  type UpstreamError,
} from '../errors.ts';
import type { Host } from '../hosts.ts';
import { headersFromVars, requestVars, TimeoutSweeper, type Timed, type Transport, type TransportRequest, type TransportResponse } from './transport.ts';

/** Idle sessions are pinged this often; a PING unanswered for pingTimeout kills the session. */
const PING_INTERVAL_MS = 5000;

const kExchange = Symbol('gatewire.exchange');
type TaggedStream = GatewireStream & { [kExchange]?: Exchange };

class HostSessions {
  readonly sessions: GatewireSession[] = [];
  connecting = 0;
  readonly waiters: Exchange[] = [];
  closed = false;
  readonly host: Host;
  constructor(host: Host) {
    this.host = host;
  }
}

export class GatewireTransport implements Transport {
  readonly sweeper = new TimeoutSweeper();
  private readonly hosts = new Map<Host, HostSessions>();
  private readonly pingTimeoutMs: number;

  readonly cfg: UpstreamConfig;
  constructor(cfg: UpstreamConfig) {
    this.cfg = cfg;
    this.pingTimeoutMs = Math.min(10_000, Math.max(1000, cfg.timeouts.read_ms));
  }

  request(host: Host, req: TransportRequest): Promise<TransportResponse> {
    return new Promise((resolve, reject) => {
      if (req.aborted) {
        reject(new ClientAbortedError());
        return;
      }
      const vars = requestVars(req);
      // REQUEST carries the vars in one frame: headers beyond it are the client's 431
      if (varsSize(vars) > MAX_VARS_SIZE || varsSize(vars) < 0) {
        reject(new HeadersTooLargeError(`vars block over ${MAX_VARS_SIZE} bytes`));
        return;
      }
      const ex = new Exchange(this, host, req, vars, resolve, reject);
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

  /** Puts an exchange on the least-loaded session, or queues it for one. */
  private place(hs: HostSessions, ex: Exchange): void {
    const limit = this.cfg.connections_per_server;
    let best: GatewireSession | null = null;
    let bestActive = Number.POSITIVE_INFINITY;
    const sessions = hs.sessions;
    for (let i = 0; i < sessions.length; i++) {
      const s = sessions[i];
      if (s.availableStreams <= 0) continue;
      const active = s.activeStreams;
      if (active < bestActive) {
        best = s;
        bestActive = active;
      }
    }
    if (best !== null) {
      // all busy: grow towards the limit for the next requests
      if (bestActive > 0 && sessions.length + hs.connecting < limit) this.connect(hs);
      ex.start(best);
      return;
    }
    hs.waiters.push(ex);
    if (sessions.length + hs.connecting < limit || (sessions.length === 0 && hs.connecting === 0)) this.connect(hs);
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
      const waiters = hs.waiters.splice(0);
      for (const ex of waiters) ex.fail(connectError(err, true));
    });
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      hs.connecting--;
      socket.setNoDelay(true);
      if (hs.closed) {
        socket.destroy();
        return;
      }
      const session = new GatewireSession(socket, { role: 'client', pingIntervalMs: PING_INTERVAL_MS, pingTimeoutMs: this.pingTimeoutMs });
      session.on('error', () => {}); // connection errors surface on the streams; the session closes itself
      session.once('close', () => {
        const i = hs.sessions.indexOf(session);
        if (i >= 0) hs.sessions.splice(i, 1);
        this.drainWaiters(hs);
      });
      session.on('goaway', () => this.drainWaiters(hs));
      hs.sessions.push(session);
      this.drainWaiters(hs);
    });
  }

  /** Capacity appeared (new session, a stream ended, a session left): serve waiters in order. */
  drainWaiters(hs: HostSessions): void {
    while (hs.waiters.length > 0) {
      let best: GatewireSession | null = null;
      let bestActive = Number.POSITIVE_INFINITY;
      for (const s of hs.sessions) {
        if (s.availableStreams > 0 && s.activeStreams < bestActive) {
          best = s;
          bestActive = s.activeStreams;
        }
      }
      if (best === null) {
        if (hs.sessions.length + hs.connecting < this.cfg.connections_per_server || (hs.sessions.length === 0 && hs.connecting === 0)) {
          if (!hs.closed) this.connect(hs);
          else for (const ex of hs.waiters.splice(0)) ex.fail(connectError(new Error('upstream host removed'), true));
        }
        return;
      }
      (hs.waiters.shift() as Exchange).start(best);
    }
  }

  streamEnded(host: Host): void {
    const hs = this.hosts.get(host);
    if (hs !== undefined && hs.waiters.length > 0) this.drainWaiters(hs);
  }

  dequeue(ex: Exchange): void {
    const hs = this.hosts.get(ex.host);
    if (hs === undefined) return;
    const i = hs.waiters.indexOf(ex);
    if (i >= 0) hs.waiters.splice(i, 1);
  }

  closeHost(host: Host): void {
    const hs = this.hosts.get(host);
    if (hs === undefined) return;
    hs.closed = true;
    this.hosts.delete(host);
    for (const s of hs.sessions) void s.close();
  }

  /** Sessions for /status. */
  sessionCounts(): Record<string, { sessions: number; streams: number }> {
    const out: Record<string, { sessions: number; streams: number }> = {};
    for (const [host, hs] of this.hosts) {
      let streams = 0;
      for (const s of hs.sessions) streams += s.activeStreams;
      out[host.address] = { sessions: hs.sessions.length, streams };
    }
    return out;
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

/** Larger complete bodies still stream (they are few, and a copy of them would cost more than it saves). */
const WHOLE_BODY_MAX = 256 * 1024;
const EMPTY_BODY = Buffer.alloc(0);

/** A response head; with takeWholeBody for a body that arrived in the same read as the head. */
class GatewireResponse implements TransportResponse {
  readonly statusCode: number;
  readonly headers: Record<string, string | string[]>;
  readonly body: GatewireStream;
  private readonly exchange: Exchange;
  constructor(
    statusCode: number,
    headers: Record<string, string | string[]>,
    body: GatewireStream,
    exchange: Exchange,
  ) {
    this.statusCode = statusCode;
    this.headers = headers;
    this.body = body;
    this.exchange = exchange;
  }

  takeWholeBody(expectedLength: number): Buffer | null {
    return this.exchange.takeWholeBody(expectedLength);
  }
}

const PHASE_QUEUED = 0;
const PHASE_HEAD = 1;
const PHASE_BODY = 2;
const PHASE_DONE = 3;

function onStreamResponse(this: TaggedStream, status: number, headers: Vars): void {
  this[kExchange]?.onResponse(status, headers);
}
function onStreamError(this: TaggedStream, err: Error): void {
  this[kExchange]?.onStreamError(err);
}
function onStreamEnd(this: TaggedStream): void {
  this[kExchange]?.finish();
}

class Exchange implements Timed {
  phase = PHASE_QUEUED;
  private stream: TaggedStream | null = null;
  private lastActivity = Date.now();
  private lastProgress = -1;

  private readonly transport: GatewireTransport;
  readonly host: Host;
  private readonly req: TransportRequest;
  private readonly vars: Vars;
  private readonly resolve: (res: TransportResponse) => void;
  private readonly reject: (err: Error) => void;
  constructor(
    transport: GatewireTransport,
    host: Host,
    req: TransportRequest,
    vars: Vars,
    resolve: (res: TransportResponse) => void,
    reject: (err: Error) => void,
  ) {
    this.transport = transport;
    this.host = host;
    this.req = req;
    this.vars = vars;
    this.resolve = resolve;
    this.reject = reject;
    req.cancel = () => this.cancel();
  }

  start(session: GatewireSession): void {
    if (this.phase !== PHASE_QUEUED) return;
    this.phase = PHASE_HEAD;
    this.lastActivity = Date.now();
    const body = this.req.body;
    const whole = this.req.bodyBuffer ?? null;
    const stream = session.request(this.vars, { endStream: body === null && whole === null }) as TaggedStream;
    this.stream = stream;
    stream[kExchange] = this;
    stream.on('response', onStreamResponse);
    stream.on('error', onStreamError);
    stream.on('close', onStreamEnd);
    if (whole !== null) {
      // REQUEST and DATA(END) leave in the same write; the buffer stays with the request for a replay
      if (session.ready) stream.end(whole);
      else session.once('ready', () => stream.destroyed || stream.end(whole));
    } else if (body !== null) {
      if (session.ready) this.sendBody(body, stream);
      else session.once('ready', () => this.sendBody(body, stream));
    }
  }

  private sendBody(body: Readable, stream: GatewireStream): void {
    if (this.phase === PHASE_DONE || stream.destroyed) return;
    const req = this.req;
    body.once('data', () => {
      req.bodyStarted = true;
    });
    body.once('error', (err) => {
      const e = err as UpstreamError;
      this.fail(e.code === 'GW_BODY_TOO_LARGE' ? e : (new ClientAbortedError() as UpstreamError));
    });
    body.pipe(stream);
  }

  onResponse(status: number, headers: Vars): void {
    if (this.phase !== PHASE_HEAD) return;
    this.phase = PHASE_BODY;
    this.lastActivity = Date.now();
    this.resolve(new GatewireResponse(status, headersFromVars(headers), this.stream as GatewireStream, this));
  }

  /**
   * The body when it is complete: END_STREAM received, the stream closed both ways, nothing read
   * yet, exactly `expectedLength` bytes buffered. The exchange is then over.
   */
  takeWholeBody(expectedLength: number): Buffer | null {
    const stream = this.stream;
    if (this.phase !== PHASE_BODY || stream === null || !stream._remoteEnded || !stream._wireClosed || stream.destroyed) return null;
    if (stream.readableFlowing !== null || stream.readableLength !== expectedLength || expectedLength > WHOLE_BODY_MAX) return null;
    // read() hands over everything buffered (and lets the stream end and close on its own)
    const body = stream.read() as Buffer | null;
    this.done();
    return body ?? EMPTY_BODY;
  }

  onStreamError(err: Error): void {
    if (this.phase === PHASE_HEAD || this.phase === PHASE_QUEUED) this.fail(mapStreamError(err));
    else this.finish();
  }

  /** The stream closed (or errored after the head): the exchange is over. */
  finish(): void {
    if (this.phase === PHASE_DONE) return;
    if (this.phase === PHASE_HEAD) {
      // closed without a response and without an error
      this.fail(protocolFailure(new Error('stream closed without a response')));
      return;
    }
    this.done();
  }

  private done(): void {
    this.phase = PHASE_DONE;
    this.req.cancel = null;
    const stream = this.stream;
    if (stream !== null) stream[kExchange] = undefined;
    this.transport.sweeper.delete(this);
    this.transport.streamEnded(this.host);
  }

  fail(err: UpstreamError): void {
    const phase = this.phase;
    if (phase === PHASE_DONE) return;
    if (phase === PHASE_QUEUED) this.transport.dequeue(this);
    const stream = this.stream;
    this.done();
    if (stream !== null && !stream.destroyed) stream.reset(ErrorCode.CANCEL);
    if (phase === PHASE_BODY) stream?.destroy(err);
    else this.reject(err);
  }

  private cancel(): void {
    this.fail(new ClientAbortedError() as UpstreamError);
  }

  checkTimeout(now: number): void {
    const phase = this.phase;
    const stream = this.stream;
    if (phase === PHASE_BODY && stream !== null) {
      // received bytes, bytes buffered for a slow client, or bytes the client took: all progress
      const progress = stream._bodyReceived + (this.req.progress?.() ?? 0);
      if (progress !== this.lastProgress || stream.readableLength > 0) {
        this.lastProgress = progress;
        this.lastActivity = now;
        return;
      }
    }
    if (now - this.lastActivity <= this.req.readTimeoutMs) return;
    if (phase === PHASE_QUEUED) this.fail(timeoutError('waiting for a connection'));
    else if (phase === PHASE_HEAD) this.fail(timeoutError('no response head'));
    else if (phase === PHASE_BODY) this.fail(timeoutError('no body bytes'));
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
