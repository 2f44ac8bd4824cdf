// One upstream at run time: its pool of hosts, the transport that reaches them
// and its active health checks. A config reload keeps the runtime of an
// upstream whose config did not change (pool state, health, warm connections);
// a runtime the new config no longer uses is retired once its last exchange
// ended.
import type { Logger } from 'pino';
import type { UpstreamConfig } from './config.ts';
import { WaitQueue } from './conn-limits.ts';
import { HealthChecker } from './healthchecks.ts';
import type { Host } from './hosts.ts';
import type { ProxyMetrics } from './metrics.ts';
import { GatewireTransport } from './transports/gatewire.ts';
import { HttpTransport } from './transports/http.ts';
import type { Transport, TransportRequest } from './transports/transport.ts';
import { UwsgiTransport } from './transports/uwsgi.ts';
import { type NameResolver, UpstreamPool } from './upstreams.ts';

export interface RuntimeOptions {
  metrics?: ProxyMetrics | null;
  /** DNS replacement for `resolve: true` servers (tests). */
  resolver?: NameResolver;
  /** Replaces the transport the protocol names (in-process tests). */
  transportFactory?: (cfg: UpstreamConfig) => Transport;
}

export function createTransport(cfg: UpstreamConfig): Transport {
  switch (cfg.protocol) {
    case 'gatewire':
      return new GatewireTransport(cfg);
    case 'uwsgi':
      return new UwsgiTransport(cfg);
    case 'http':
      return new HttpTransport(cfg);
  }
}

export class UpstreamRuntime {
  readonly name: string;
  readonly cfg: UpstreamConfig;
  /** The config it was built from, serialised: a reload keeps the runtime when it is unchanged. */
  readonly key: string;
  readonly pool: UpstreamPool;
  readonly transport: Transport;
  readonly health: HealthChecker | null;
  /** Requests waiting for a server under its max_conns (NGINX Plus `queue`); null without queue.size. */
  readonly queue: WaitQueue | null;
  private active = 0;
  private retiring: (() => void) | null = null;

  constructor(cfg: UpstreamConfig, key: string, opts: RuntimeOptions, log: Logger) {
    this.cfg = cfg;
    this.key = key;
    this.name = cfg.name;
    this.pool = new UpstreamPool(cfg, { resolver: opts.resolver, logger: log });
    this.transport = (opts.transportFactory ?? createTransport)(cfg);
    this.queue = cfg.queue.size > 0 ? new WaitQueue(`upstream:${cfg.name}`, cfg.queue.size, cfg.queue.timeout_ms, opts.metrics?.edge ?? null) : null;
    this.health = cfg.health_check
      ? new HealthChecker(this.pool, (host, path, timeoutMs) => probe(this.transport, host, path, timeoutMs), {
          logger: log,
          metrics: opts.metrics ?? undefined,
        })
      : null;
    // Hosts removed by DNS: their kept connections go once they are drained.
    this.pool.on('drained', (host: Host) => this.transport.closeHost(host));
  }

  /** Exchanges of this upstream in flight (status, drain on reload). */
  get inflight(): number {
    return this.active;
  }

  exchangeStarted(): void {
    this.active++;
  }

  exchangeEnded(): void {
    if (--this.active === 0 && this.retiring !== null) this.retiring();
  }

  start(): void {
    void this.pool.start();
    this.health?.start();
  }

  /** Closes once no exchange of this runtime is in flight (reload); `force` closes at once. */
  retire(force = false): Promise<void> {
    this.health?.stop();
    this.pool.stop();
    // waiters are woken by the exchanges still draining; only a forced close gives up on them
    if (force) this.queue?.flush();
    if (force || this.active === 0) return this.transport.close(force);
    return new Promise((resolve) => {
      this.retiring = () => {
        this.retiring = null;
        this.transport.close().then(resolve, resolve);
      };
    });
  }
}

/** A health probe: `GET path` through the same transport as traffic; resolves with the status. */
export async function probe(transport: Transport, host: Host, path: string, timeoutMs: number): Promise<number> {
  const req: TransportRequest = {
    method: 'GET',
    path,
    upstreamHeaders: ['host', 'localhost', 'user-agent', 'gatewire-health-check'],
    body: null,
    bodyBuffer: null,
    contentLength: -1,
    remoteAddress: '127.0.0.1',
    remotePort: 0,
    scheme: 'http',
    serverName: 'localhost',
    serverPort: 0,
    scriptName: '',
    readTimeoutMs: timeoutMs,
    sendTimeoutMs: timeoutMs,
    bodyStarted: false,
    signal: AbortSignal.timeout(timeoutMs),
    progress: () => 0,
  };
  const res = await transport.request(host, req);
  res.body.resume();
  await new Promise<void>((resolve, reject) => {
    res.body.once('end', resolve);
    res.body.once('error', reject);
    res.body.once('close', resolve);
  });
  return res.statusCode;
}
