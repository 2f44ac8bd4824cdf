// The object handed to @fastify/reply-from as its `undici` option. reply-from
// calls `request(opts, cb)` the way it calls an undici Pool; we find the
// per-request context that server.ts attached to the headers under a symbol
// (Object.assign in reply-from copies symbol keys, and no transport ever
// serialises a symbol key), pick a host from the route's pool, run the pool's
// transport, and retry on another host when that is safe: only while nothing
// has reached the client (reply-from calls back once), never after a byte of
// a streamed request body was read (a small body is read whole first and can
// be sent again: see server.ts readWholeBody), and only for the configured methods unless the
// upstream provably never processed the request (refused connection,
// REFUSED_STREAM, stream beyond GOAWAY's last id).
import type { Readable } from 'node:stream';
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { UpstreamConfig } from './config.ts';
import { NoHealthyUpstreamError, type UpstreamError } from './errors.ts';
import type { Host } from './hosts.ts';
import type { ProxyMetrics } from './metrics.ts';
import type { SelectionContext } from './selection-policies.ts';
import type { Transport, TransportRequest, TransportResponse } from './transports/transport.ts';
import type { UpstreamPool } from './upstreams.ts';
import type { WaitQueue } from './conn-limits.ts';

export const kProxyRequest = Symbol('gatewire.proxyRequest');

/** One upstream of one config generation: its pool of hosts and the transport that reaches them. */
export interface UpstreamRuntime {
  readonly name: string;
  readonly cfg: UpstreamConfig;
  readonly pool: UpstreamPool;
  readonly transport: Transport;
  /** Exchanges of this upstream in flight (status, drain on reload). */
  inflight: number;
  /** Requests waiting for a server under its max_conns; null without queue.size. */
  readonly queue: WaitQueue | null;
}

export interface DispatchOptions {
  origin?: string;
  path: string;
  method: string;
  headers: Record<string | symbol, unknown>;
  body?: unknown;
}
/** `body` is a Buffer when the whole body had already arrived (see ProxyRequest.wholeBody). */
export type DispatchCallback = (err: Error | null, res?: { statusCode: number; headers: Record<string, string | string[]>; body: Readable | Buffer }) => void;

const MAX_REFUSED_RETRIES = 8;

/** Per-request state: the TransportRequest the transports see, the selection context, and bookkeeping. */
export class ProxyRequest implements TransportRequest, SelectionContext {
  method = 'GET';
  path = '/';
  headers: Record<string, string | string[] | undefined>;
  body: Readable | null = null;
  /** The client's raw headers when vars are built from them (see TransportRequest.rawHeaders). */
  rawHeaders: string[] | null = null;
  forwarded: string[] | null = null;
  dropContentLength = false;
  /** The whole body when it was read before the first try (body_buffer_size): replayable. */
  bodyBuffer: Buffer | null = null;
  readTimeoutMs: number;
  bodyStarted = false;
  aborted = false;
  cancel: (() => void) | null = null;
  /** The chosen host (held — acquire()d — until finish()). */
  host: Host | null = null;
  attempts = 0;
  refusals = 0;
  tried: Set<Host> | null = null;
  upstreamStart = 0;
  /** ms from dispatch to the response head of the last attempt; -1 if none. */
  upstreamMs = -1;
  statusCode = 0;
  /** The upstream response (head and body stream) was handed to reply-from. */
  responded = false;
  /** Address of the last host tried (access log). */
  hostAddress = '';
  routeLabel = '';
  /** Fastify's request id (access log). */
  requestId = '';
  startedAt = 0;
  bytesOutMark = 0;
  bytesInMark = 0;
  /** The client connection (res.socket is detached once the response finished). */
  clientSocket: Socket | null = null;
  errorCode: string | null = null;
  lastError: UpstreamError | null = null;
  /** reply-from's callback; null once called (exactly once per request). */
  cb: DispatchCallback | null = null;
  private readonly metrics: ProxyMetrics | null;

  readonly upstream: UpstreamRuntime;
  readonly res: ServerResponse;
  readonly clientIp: string;
  readonly remotePort: number;
  readonly scheme: 'http' | 'https';
  readonly serverName: string;
  readonly serverPort: number;
  readonly url: string;
  constructor(
    upstream: UpstreamRuntime,
    res: ServerResponse,
    clientIp: string,
    remotePort: number,
    scheme: 'http' | 'https',
    serverName: string,
    serverPort: number,
    url: string,
    headers: Record<string, string | string[] | undefined>,
    metrics: ProxyMetrics | null,
  ) {
    this.upstream = upstream;
    this.res = res;
    this.clientIp = clientIp;
    this.remotePort = remotePort;
    this.scheme = scheme;
    this.serverName = serverName;
    this.serverPort = serverPort;
    this.url = url;
    this.headers = headers;
    this.readTimeoutMs = upstream.cfg.timeouts.read_ms;
    this.metrics = metrics;
    upstream.inflight++;
  }

  get remoteAddress(): string {
    return this.clientIp;
  }

  /** Bytes handed to the client so far: a slow client is progress, not a silent upstream. */
  progress(): number {
    return this.clientSocket?.bytesWritten ?? 0;
  }

  start(cb: DispatchCallback): void {
    this.cb = cb;
    this.attempt();
  }

  private attempt(): void {
    const up = this.upstream;
    const host = up.pool.select(this, this.tried ?? undefined);
    if (host === null && this.lastError === null && up.queue !== null && up.pool.hosts.some((h) => h.atCapacity())) {
      // every server that could take it is at max_conns: wait for one to finish (NGINX Plus `queue`)
      const cancel = up.queue.wait(
        () => {
          this.cancel = null;
          if (!this.aborted) this.attempt();
        },
        () => {
          this.cancel = null;
          failWith(this, new NoHealthyUpstreamError(up.name));
        },
      );
      if (cancel !== null) {
        this.cancel = cancel;
        return;
      }
    }
    if (host === null) {
      // after failed tries the client hears about the last failure (502/504), like NGINX;
      // 503 only when no server could be tried at all. Asynchronous on purpose (reply-from).
      process.nextTick(failWith, this, this.lastError ?? new NoHealthyUpstreamError(up.name));
      return;
    }
    this.attempts++;
    this.host = host;
    this.hostAddress = host.address;
    host.acquire();
    this.upstreamStart = performance.now();
    up.transport.request(host, this).then(
      (res) => this.onResponse(host, res),
      (err) => this.onError(host, err as UpstreamError),
    );
  }

  private onResponse(host: Host, res: TransportResponse): void {
    this.upstreamMs = performance.now() - this.upstreamStart;
    host.markSuccess();
    this.metrics?.upstreamRequest(this.upstream.name, host.address, this.upstreamMs / 1000, 'ok');
    const cb = this.cb;
    this.cb = null;
    if (cb === null) {
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
    if (whole !== null) {
      // the body already arrived whole: Fastify sends head and body in one write, no stream pipe
      cb(null, { statusCode: res.statusCode, headers, body: whole });
      return;
    }
    cb(null, res);
  }

  /**
   * The complete body as one buffer when the transport has it and Fastify would send it exactly as
   * the stream: a body the upstream framed with a matching Content-Length and typed (Fastify types
   * an untyped buffer), not HEAD/204/304 (their framing headers describe no body here).
   */
  private wholeBody(res: TransportResponse): Buffer | null {
    if (res.takeWholeBody === undefined || this.aborted || this.res.destroyed) return null;
    const status = res.statusCode;
    if (status < 200 || status === 204 || status === 304 || this.method === 'HEAD') return null;
    const headers = res.headers;
    const cl = headers['content-length'];
    if (typeof cl !== 'string' || headers['content-type'] === undefined) return null;
    const length = Number(cl);
    return Number.isSafeInteger(length) && length >= 0 ? res.takeWholeBody(length) : null;
  }

  private onError(host: Host, err: UpstreamError): void {
    this.upstreamMs = performance.now() - this.upstreamStart;
    this.host = null;
    host.release();
    const up = this.upstream;
    up.queue?.wake();
    if (err.hostFailure) {
      host.markFailure();
      if (err.code === 'GW_UPSTREAM_CONNECT') up.pool.reresolve();
    }
    if (err.code !== 'GW_CLIENT_ABORTED') {
      this.metrics?.upstreamRequest(up.name, host.address, this.upstreamMs / 1000, err.code === 'GW_UPSTREAM_TIMEOUT' ? 'timeout' : 'error');
    }
    this.lastError = err;
    if (this.shouldRetry(err)) {
      // a refused stream may go to the same host on another connection; anything else goes elsewhere
      if (err.code !== 'GW_UPSTREAM_REFUSED_STREAM') (this.tried ??= new Set()).add(host);
      this.metrics?.retry(up.name);
      this.attempt();
      return;
    }
    failWith(this, err);
  }

  private shouldRetry(err: UpstreamError): boolean {
    if (this.aborted || this.bodyStarted || this.cb === null) return false;
    if (err.code === 'GW_UPSTREAM_REFUSED_STREAM') return ++this.refusals <= MAX_REFUSED_RETRIES;
    if (err.code !== 'GW_UPSTREAM_CONNECT') return false; // timeouts and protocol errors: the app may have acted
    const retries = this.upstream.cfg.retries;
    if (this.attempts >= retries.tries) return false;
    return err.retryable === true || retries.methods.includes(this.method);
  }

  /** The client exchange ended (response finished or connection closed): release what we hold. */
  finish(): void {
    if (this.host !== null) {
      this.host.release();
      this.host = null;
      this.upstream.queue?.wake();
    }
    this.upstream.inflight--;
  }
}

function failWith(ctx: ProxyRequest, err: Error): void {
  ctx.errorCode = (err as UpstreamError).code ?? 'GW_UPSTREAM_PROTOCOL';
  const cb = ctx.cb;
  ctx.cb = null;
  cb?.(err);
}

/** What reply-from sees as its undici instance. */
export class Dispatcher {
  request(opts: DispatchOptions, cb: DispatchCallback): void {
    const ctx = opts.headers[kProxyRequest] as ProxyRequest | undefined;
    if (ctx === undefined) {
      process.nextTick(cb, new Error('gatewire dispatcher: request without proxy context'));
      return;
    }
    ctx.method = opts.method;
    // ctx.path was set by server.ts from the raw request target; opts.path is reply-from's
    // URL-normalised rebuild of a fixed source and is ignored
    // on the raw-headers path opts.headers is only the marker: ctx.headers stays the client's
    if (ctx.rawHeaders === null) ctx.headers = opts.headers as Record<string, string | string[] | undefined>;
    const body = opts.body as Readable | null | undefined;
    // a buffered body was read from that same stream, which reply-from still hands over (ended)
    ctx.body = ctx.bodyBuffer === null && body != null && typeof (body as Readable).pipe === 'function' ? body : null;
    ctx.start(cb);
  }
  close(): void {}
  destroy(): void {}
}
