// HTTP/1.1 upstreams (gunicorn, waitress, node:http) through undici: one Pool
// per host with `connections_per_server` keep-alive connections. undici
// enforces the head and between-chunk read timeouts and takes the request's
// AbortSignal as is.
import { Pool } from 'undici';
import type { UpstreamConfig } from '../config.ts';
import { ClientAbortedError, connectError, protocolFailure, proxyFailure, timeoutError, type UpstreamError } from '../errors.ts';
import type { Host } from '../hosts.ts';
import type { Transport, TransportRequest, TransportResponse } from './transport.ts';

export class HttpTransport implements Transport {
  private readonly pools = new Map<Host, Pool>();
  private readonly cfg: UpstreamConfig;
  constructor(cfg: UpstreamConfig) {
    this.cfg = cfg;
  }

  private poolFor(host: Host): Pool {
    let pool = this.pools.get(host);
    if (pool === undefined) {
      const target = host.target;
      const opts: Pool.Options = {
        connections: this.cfg.connections_per_server,
        pipelining: 1,
        connect: { timeout: this.cfg.timeouts.connect_ms },
        headersTimeout: this.cfg.timeouts.read_ms,
        bodyTimeout: this.cfg.timeouts.read_ms,
        keepAliveTimeout: 30_000,
      };
      let origin: string;
      if (target.kind === 'unix') {
        opts.socketPath = target.path;
        origin = 'http://localhost';
      } else {
        origin = `http://${host.address}`;
      }
      pool = new Pool(origin, opts);
      this.pools.set(host, pool);
    }
    return pool;
  }

  async request(host: Host, req: TransportRequest): Promise<TransportResponse> {
    if (req.signal.aborted) throw new ClientAbortedError();
    const pool = this.poolFor(host);
    // undici reads the body as soon as it has a connection: from here no retry can replay it
    if (req.body !== null) req.bodyStarted = true;
    try {
      const res = await pool.request({
        path: req.path,
        method: req.method as 'GET',
        headers: req.upstreamHeaders,
        // a buffered body is a Buffer undici sends whole on each try: replayable
        body: req.bodyBuffer ?? req.body,
        headersTimeout: req.readTimeoutMs,
        bodyTimeout: req.readTimeoutMs,
        signal: req.signal,
      });
      // never an unhandled 'error' before the consumer listens (it would take the proxy down)
      res.body.on('error', noop);
      return { statusCode: res.statusCode, headers: res.headers as Record<string, string | string[]>, body: res.body };
    } catch (err) {
      throw mapUndiciError(err, req);
    }
  }

  closeHost(host: Host): void {
    const pool = this.pools.get(host);
    if (pool) {
      this.pools.delete(host);
      pool.close().catch(() => {});
    }
  }

  async close(force = false): Promise<void> {
    const pools = [...this.pools.values()];
    this.pools.clear();
    await Promise.all(pools.map((p) => (force ? p.destroy() : p.close()).catch(() => {})));
  }
}

function noop(): void {}

function mapUndiciError(err: unknown, req: TransportRequest): UpstreamError {
  const code = (err as NodeJS.ErrnoException).code;
  if (req.signal.aborted) {
    const reason = req.signal.reason as UpstreamError | undefined;
    return typeof reason?.code === 'string' && reason.code.startsWith('GW_') ? reason : (new ClientAbortedError() as UpstreamError);
  }
  if (code === 'UND_ERR_ABORTED') return new ClientAbortedError() as UpstreamError;
  // an error of our own (the body limiter's 413, the body timeout's 408) passes through unchanged
  if (typeof code === 'string' && code.startsWith('GW_')) return err as UpstreamError;
  switch (code) {
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
      return timeoutError('no response within the read timeout');
    case 'UND_ERR_CONNECT_TIMEOUT':
      return connectError(err, true);
    case 'ECONNREFUSED':
    case 'ENOENT':
    case 'ECONNRESET':
    case 'EPIPE':
    case 'UND_ERR_SOCKET':
    case 'UND_ERR_CLOSED':
    case 'UND_ERR_DESTROYED':
      // refused/missing socket never reached the app; a reset may have, so only idempotent methods retry it
      return connectError(err, code === 'ECONNREFUSED' || code === 'ENOENT');
    case 'UND_ERR_NOT_SUPPORTED':
    case 'UND_ERR_INVALID_ARG':
    case 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH':
      // undici refused what we asked before sending anything: the server is not at fault
      return proxyFailure(err);
    default:
      return protocolFailure(err);
  }
}
