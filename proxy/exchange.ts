// ProxyExchange: one client request from the route to the end of its response.
// It is the TransportRequest every try hands to a transport and the
// SelectionContext the balancing policy reads; it owns the retry loop (which
// host next, whether a failure may be tried again, what the client hears when
// not), the request body (read whole when small, so that it can be replayed;
// bounded in size and in time between two reads), cancellation (one
// AbortController for the whole exchange) and the bookkeeping the access log
// and the metrics report once it ended.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import { BodyLimit, readWholeBody } from './body.ts';
import { BodyTimeoutError, NoHealthyUpstreamError, type UpstreamError } from './errors.ts';
import type { Host } from './hosts.ts';
import type { ProxyMetrics } from './metrics.ts';
import type { UpstreamRuntime } from './upstream-runtime.ts';
import type { SelectionContext } from './selection-policies.ts';
import type { Timed, TimeoutSweeper } from './transports/base.ts';
import { type TransportRequest, type TransportResponse, wholeBodyLength } from './transports/transport.ts';

/** What the forwarding layer gets back: the upstream response, or its body already whole. */
export interface ExchangeResponse {
  statusCode: number;
  headers: Record<string, string | string[]>;
  body: Readable | Buffer;
}
export type ExchangeCallback = (err: UpstreamError | null, res?: ExchangeResponse) => void;

/** Where an exchange was routed: the upstream, and what routing decided about the path. */
export interface RouteTarget {
  runtime: UpstreamRuntime;
  label: string;
  /** The prefix strip_prefix removes ('' when the route keeps the path). */
  stripped: string;
}

/** What every exchange of one listener shares. */
export interface ExchangeContext {
  readonly metrics: ProxyMetrics | null;
  /** Sweeps exchanges whose request body is still arriving (limits.body_timeout). */
  readonly bodySweeper: TimeoutSweeper;
  readonly bodyTimeoutMs: number;
  readonly serverPort: number;
  readonly scheme: 'http' | 'https';
}

/**
 * A refused stream (the server's stream limit, a stream beyond GOAWAY) says nothing about the
 * host: once every server was tried, a fresh connection to one may still take it, this many times.
 */
const MAX_REFUSED_STREAM_RETRIES = 8;

export class ProxyExchange implements TransportRequest, SelectionContext, Timed {
  // --- TransportRequest
  method: string;
  path: string;
  upstreamHeaders: string[] = EMPTY;
  body: Readable | null = null;
  bodyBuffer: Buffer | null = null;
  contentLength: number;
  readonly clientIp: string;
  readonly remotePort: number;
  readonly scheme: 'http' | 'https';
  readonly serverName: string;
  readonly serverPort: number;
  readonly scriptName: string;
  readonly readTimeoutMs: number;
  readonly sendTimeoutMs: number;
  bodyStarted = false;
  sweepIndex = -1;
  // --- SelectionContext
  readonly headers: IncomingMessage['headers'];
  readonly url: string;
  // --- bookkeeping
  readonly runtime: UpstreamRuntime;
  readonly route: RouteTarget;
  readonly requestId: string;
  readonly startedAt = performance.now();
  /** The host of the try in flight (acquire()d until it ends). */
  host: Host | null = null;
  /** Address of the last host tried (access log). */
  hostAddress = '';
  /** ms from a try's start to its response head (the last try); -1 if none. */
  upstreamMs = -1;
  /** The upstream response was handed to the client side (errors after that are the body's). */
  responded = false;
  errorCode: string | null = null;
  private attempts = 0;
  private refusals = 0;
  private tried: Set<Host> | null = null;
  private lastError: UpstreamError | null = null;
  private tryStart = 0;
  private cb: ExchangeCallback | null = null;
  /** Withdraws this exchange from its upstream's max_conns queue while it waits there. */
  private leaveQueue: (() => void) | null = null;
  private readonly controller = new AbortController();
  private readonly raw: IncomingMessage;
  private readonly res: ServerResponse;
  /** The client connection (res.socket is detached once the response finished). */
  readonly socket: Socket;
  private readonly bytesInMark: number;
  private readonly bytesOutMark: number;
  private readonly ctx: ExchangeContext;
  private bodyLastRead = 0;
  private bodyLastBytes = -1;
  private ended = false;

  constructor(ctx: ExchangeContext, route: RouteTarget, raw: IncomingMessage, res: ServerResponse, requestId: string, serverName: string) {
    this.ctx = ctx;
    this.route = route;
    const runtime = route.runtime;
    this.runtime = runtime;
    this.raw = raw;
    this.res = res;
    this.requestId = requestId;
    const socket = raw.socket;
    this.socket = socket;
    this.bytesInMark = socket.bytesRead;
    this.bytesOutMark = socket.bytesWritten;
    this.clientIp = socket.remoteAddress ?? '';
    this.remotePort = socket.remotePort ?? 0;
    this.scheme = ctx.scheme;
    this.serverName = serverName;
    this.serverPort = ctx.serverPort;
    this.method = raw.method as string;
    const url = raw.url as string;
    this.url = url;
    this.headers = raw.headers;
    const prefix = route.stripped;
    if (prefix !== '') {
      // on the raw target: the query string stays as sent
      const rest = url.slice(prefix.length);
      this.path = rest.charCodeAt(0) === 47 ? rest : `/${rest}`;
      this.scriptName = prefix.charCodeAt(prefix.length - 1) === 47 ? prefix.slice(0, -1) : prefix;
    } else {
      this.path = url;
      this.scriptName = '';
    }
    const cl = raw.headers['content-length'];
    this.contentLength = cl === undefined ? -1 : Number(cl);
    const cfg = runtime.cfg;
    this.readTimeoutMs = cfg.timeouts.read_ms;
    this.sendTimeoutMs = cfg.timeouts.send_ms;
    runtime.exchangeStarted();
  }

  get remoteAddress(): string {
    return this.clientIp;
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Client bytes in and out on this connection since the exchange began: progress on the client side. */
  progress(): number {
    const socket = this.socket;
    return socket.bytesWritten + socket.bytesRead;
  }

  /** Whether the client sends a body that goes upstream (GET and HEAD bodies are not forwarded, as before). */
  get forwardsBody(): boolean {
    const m = this.method;
    return m !== 'GET' && m !== 'HEAD' && (this.contentLength > 0 || (this.contentLength < 0 && this.raw.headers['transfer-encoding'] !== undefined));
  }

  /**
   * Takes the client's body: NGINX's request buffering for small bodies (announced by
   * Content-Length and at most body_buffer_size: read whole, then every try sends the same buffer,
   * so a try the server provably never processed is replayed elsewhere instead of failing a POST
   * with 502 — a streamed body cannot be replayed once its first byte left), a stream for the rest
   * (chunked ones counted against max_body). `ready` runs once the exchange can be forwarded.
   */
  takeBody(ready: () => void): void {
    if (!this.forwardsBody) {
      ready();
      return;
    }
    const raw = this.raw;
    const length = this.contentLength;
    if (length > 0 && length <= this.runtime.cfg.body_buffer_size) {
      // The request handler runs when the head is parsed; a small body that came in the same
      // packet is parsed right after it returns. Once that is done (next tick) it is taken from
      // the request's buffer as it is, without listeners, a promise and a wait for 'end'.
      process.nextTick(takeSmallBody, this, length, ready);
      return;
    }
    if (this.ctx.bodyTimeoutMs > 0) this.ctx.bodySweeper.add(this);
    if (length < 0) {
      const limited = raw.pipe(new BodyLimit(this.runtime.cfg.max_body));
      // the client's abort reaches the transport through the limiter; once the try let go of it,
      // nobody listens and the error must not become an uncaught one
      limited.on('error', noop);
      raw.once('error', (err) => limited.destroy(err));
      this.body = limited;
    } else this.body = raw;
    raw.once('end', () => this.ctx.bodySweeper.delete(this));
    ready();
  }

  /** A body of at most body_buffer_size: from the request's buffer when it is all there, else read as it comes. */
  readSmallBody(length: number, ready: () => void): void {
    if (this.ended) return;
    const raw = this.raw;
    if (raw.complete && raw.readableFlowing === null && raw.readableLength === length) {
      this.bodyBuffer = raw.read() as Buffer;
      ready();
      return;
    }
    if (this.ctx.bodyTimeoutMs > 0) this.ctx.bodySweeper.add(this);
    readWholeBody(raw, length, length).then(
      (whole) => {
        this.ctx.bodySweeper.delete(this);
        if (this.ended) return;
        this.bodyBuffer = whole;
        ready();
      },
      () => {
        // the client went away or timed out mid-body: the response close (or the 408) ends the exchange
        this.ctx.bodySweeper.delete(this);
      },
    );
  }

  /** limits.body_timeout: time between two reads of the request body while the proxy waits for it. */
  checkTimeout(now: number): void {
    const raw = this.raw;
    if (raw.complete || this.ended) {
      this.ctx.bodySweeper.delete(this);
      return;
    }
    const read = this.socket.bytesRead;
    // the clock runs only while the proxy wants body bytes and has none (not while the upstream is slow to take them)
    const waiting = raw.readableFlowing === true && raw.readableLength === 0 && (this.body === null || this.body === raw || this.body.readableLength === 0);
    if (read !== this.bodyLastBytes || !waiting) {
      this.bodyLastBytes = read;
      this.bodyLastRead = now;
      return;
    }
    if (now - this.bodyLastRead <= this.ctx.bodyTimeoutMs) return;
    this.ctx.bodySweeper.delete(this);
    this.bodyTimedOut(new BodyTimeoutError(this.ctx.bodyTimeoutMs) as UpstreamError);
  }

  /** Set by the forwarding layer: called when the body timed out before any try could carry the error. */
  onEarlyFailure: ((err: UpstreamError) => void) | null = null;

  private bodyTimedOut(err: UpstreamError): void {
    this.errorCode = err.code;
    if (this.cb === null && this.onEarlyFailure !== null) {
      // still reading a small body whole: no try runs that could carry the error
      this.raw.unpipe();
      this.onEarlyFailure(err);
      return;
    }
    // the try in flight resets its upstream stream (the app's abort signal fires) and fails with 408
    this.controller.abort(err);
  }

  /** The forwarding layer asks for a response: tries hosts until one answers or no retry is allowed. */
  start(cb: ExchangeCallback): void {
    this.cb = cb;
    this.attempt();
  }

  private attempt(): void {
    const pool = this.runtime.pool;
    let host = pool.select(this, this.tried ?? undefined);
    if (host === null && this.lastError?.code === 'GW_UPSTREAM_REFUSED_STREAM' && this.refusals <= MAX_REFUSED_STREAM_RETRIES) host = pool.select(this);
    const queue = this.runtime.queue;
    if (host === null && this.lastError === null && queue !== null && pool.hosts.some((h) => h.atCapacity())) {
      // every server that could take it is at max_conns: wait for one to finish (NGINX Plus `queue`)
      this.leaveQueue = queue.wait(
        () => {
          this.leaveQueue = null;
          if (!this.ended) this.attempt();
        },
        () => {
          this.leaveQueue = null;
          this.fail(new NoHealthyUpstreamError(this.runtime.name) as UpstreamError);
        },
      );
      if (this.leaveQueue !== null) return;
    }
    if (host === null) {
      // after failed tries the client hears about the last failure (502/504), like NGINX;
      // 503 only when no server could be tried at all
      this.fail(this.lastError ?? (new NoHealthyUpstreamError(this.runtime.name) as UpstreamError));
      return;
    }
    this.attempts++;
    this.host = host;
    this.hostAddress = host.address;
    host.acquire();
    this.tryStart = performance.now();
    this.runtime.transport.request(host, this).then(
      (res) => this.onResponse(host, res),
      (err) => this.onError(host, err as UpstreamError),
    );
  }

  private onResponse(host: Host, res: TransportResponse): void {
    this.upstreamMs = performance.now() - this.tryStart;
    host.markSuccess();
    this.ctx.metrics?.upstreamRequest(this.runtime.name, host.address, this.upstreamMs / 1000, 'ok');
    const cb = this.cb;
    this.cb = null;
    if (cb === null || this.ended) {
      res.body.destroy();
      return;
    }
    // Defence in depth (the parsers already refuse both framings at once): a body the transport
    // de-chunked is re-framed for the client, so an upstream Content-Length says nothing about it
    // and, forwarded, would let surplus bytes spill into the client's next response.
    const headers = res.headers;
    if (headers['transfer-encoding'] !== undefined && headers['content-length'] !== undefined) delete headers['content-length'];
    this.responded = true;
    const whole = this.wholeBody(res);
    // the body already arrived whole: Fastify sends head and body in one write, no stream pipe
    cb(null, whole === null ? res : { statusCode: res.statusCode, headers, body: whole });
  }

  /** The complete body as one buffer when it arrived with the head (wholeBodyLength's rule). */
  private wholeBody(res: TransportResponse): Buffer | null {
    if (res.takeWholeBody === undefined) return null;
    const length = wholeBodyLength(this.method, res.statusCode, res.headers);
    return length >= 0 ? res.takeWholeBody(length) : null;
  }

  private onError(host: Host, err: UpstreamError): void {
    this.upstreamMs = performance.now() - this.tryStart;
    this.host = null;
    host.release();
    const runtime = this.runtime;
    runtime.queue?.wake();
    const pool = runtime.pool;
    if (err.hostFailure) {
      if (err.code === 'GW_UPSTREAM_CONNECT' && err.retryable) pool.hostRefused(host);
      else pool.hostFailed(host);
      if (err.code === 'GW_UPSTREAM_CONNECT') void pool.reresolve();
    }
    if (err.code !== 'GW_CLIENT_ABORTED') {
      this.ctx.metrics?.upstreamRequest(runtime.name, host.address, this.upstreamMs / 1000, err.code === 'GW_UPSTREAM_TIMEOUT' ? 'timeout' : 'error');
    }
    this.lastError = err;
    (this.tried ??= new Set()).add(host);
    if (this.shouldRetry(err)) {
      this.ctx.metrics?.retry(runtime.name);
      this.attempt();
      return;
    }
    this.fail(err);
  }

  /**
   * A try the server provably never processed (refused connection, refused stream, a stream beyond
   * GOAWAY) goes to the next server until each was tried once, whatever retries.tries says (NGINX's
   * proxy_next_upstream_tries 0); the tried set keeps it off a host it was already sent to. Other
   * connection failures retry within retries.tries and only for retries.methods: the app may have
   * acted. Nothing is retried once a byte of a streamed body left or the client went away.
   */
  private shouldRetry(err: UpstreamError): boolean {
    if (this.controller.signal.aborted || this.bodyStarted || this.cb === null || this.ended) return false;
    if (err.code === 'GW_UPSTREAM_REFUSED_STREAM') return ++this.refusals <= MAX_REFUSED_STREAM_RETRIES;
    if (err.code !== 'GW_UPSTREAM_CONNECT') return false; // timeouts and protocol errors: the app may have acted
    if (err.retryable === true) return true;
    const retries = this.runtime.cfg.retries;
    return this.attempts < retries.tries && retries.methods.includes(this.method);
  }

  private fail(err: UpstreamError): void {
    this.errorCode = err.code ?? 'GW_UPSTREAM_PROTOCOL';
    const cb = this.cb;
    this.cb = null;
    cb?.(err);
  }

  /**
   * The client exchange ended (response finished, or the connection closed first): an unfinished
   * try is cancelled at once, the host released. Returns the status the access log reports (499
   * when the client left first, as NGINX logs it).
   */
  end(): number {
    this.ended = true;
    this.ctx.bodySweeper.delete(this);
    const res = this.res;
    let status = res.statusCode;
    if (!res.writableFinished) {
      status = 499;
      this.controller.abort();
    }
    if (this.leaveQueue !== null) {
      this.leaveQueue();
      this.leaveQueue = null;
    }
    if (this.host !== null) {
      this.host.release();
      this.host = null;
      this.runtime.queue?.wake();
    }
    this.runtime.exchangeEnded();
    return status;
  }

  /** Bytes received and sent on the client connection for this exchange, head included (NGINX's $bytes_sent). */
  clientBytes(): { in: number; out: number } {
    const socket = this.socket;
    return { in: socket.bytesRead - this.bytesInMark, out: socket.bytesWritten - this.bytesOutMark };
  }
}

const EMPTY: string[] = [];

function takeSmallBody(ex: ProxyExchange, length: number, ready: () => void): void {
  ex.readSmallBody(length, ready);
}

function noop(): void {}
