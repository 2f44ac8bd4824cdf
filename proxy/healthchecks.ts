// Active health checks: every interval each host is probed (through the pool's
// own transport, supplied by core as a Probe); `fall` consecutive failures mark it
// unhealthy, `rise` consecutive successes healthy again — NGINX Plus's
// health_check semantics. Passive health (max_fails/fail_timeout) lives in Host.
import type { Host } from './hosts.ts';
import type { ProxyMetrics } from './metrics.ts';
import type { PoolLogger, UpstreamPool } from './upstreams.ts';

/** Resolves with the HTTP status of `GET path` on the host; rejects on connection errors and timeouts. */
export type Probe = (host: Host, path: string, timeoutMs: number) => Promise<number>;

interface HostHealth {
  successes: number;
  failures: number;
  probing: boolean;
  lastStatus: number | null;
  lastError: string | null;
}

export interface HealthCheckerOptions {
  logger?: PoolLogger;
  metrics?: ProxyMetrics;
}

export class HealthChecker {
  private readonly state = new WeakMap<Host, HostHealth>();
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  private readonly logger: PoolLogger | undefined;
  private readonly metrics: ProxyMetrics | undefined;

  private readonly pool: UpstreamPool;
  private readonly probe: Probe;
  constructor(
    pool: UpstreamPool,
    probe: Probe,
    opts: HealthCheckerOptions = {},
  ) {
    this.pool = pool;
    this.probe = probe;
    this.logger = opts.logger;
    this.metrics = opts.metrics;
  }

  /** No-op when the upstream has no health_check. The first round runs at once; the promise settles when it is done. */
  start(): Promise<void> {
    const hc = this.pool.config.health_check;
    if (!hc || this.running) return Promise.resolve();
    this.running = true;
    for (const h of this.pool.hosts) this.metrics?.setHostHealth(this.pool.name, h.address, h.healthy);
    // Hosts that DNS adds are reported from the start; drained ones leave the metrics.
    this.pool.on('hosts', this.onHosts);
    this.pool.on('drained', this.onDrained);
    let first: Promise<void> | null = null;
    const tick = () => {
      if (!this.running) return;
      const round = this.checkAll();
      first ??= round;
      this.timer = setTimeout(tick, hc.interval_ms);
      this.timer.unref();
    };
    tick();
    return first ?? Promise.resolve();
  }

  stop(): void {
    if (this.running) {
      this.pool.off('hosts', this.onHosts);
      this.pool.off('drained', this.onDrained);
    }
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private readonly onHosts = (added: Host[]) => {
    for (const h of added) {
      this.metrics?.setHostHealth(this.pool.name, h.address, h.healthy);
      // a host that waits for `rise` checks starts counting now, not at the next round
      if (!h.healthy && this.running) void this.checkOne(h);
    }
  };

  private readonly onDrained = (host: Host) => {
    this.metrics?.removeHost(this.pool.name, host.address);
  };

  /** One round over every host of the pool (draining ones excepted); resolves when all probes are done. */
  async checkAll(): Promise<void> {
    const hc = this.pool.config.health_check;
    if (!hc) return;
    await Promise.all(this.pool.hosts.filter((h) => !h.draining).map((h) => this.checkOne(h)));
  }

  /** What the checker knows about a host, for /status. */
  stateOf(host: Host): Readonly<HostHealth> | undefined {
    return this.state.get(host);
  }

  private async checkOne(host: Host): Promise<void> {
    const hc = this.pool.config.health_check!;
    let st = this.state.get(host);
    if (!st) {
      st = { successes: 0, failures: 0, probing: false, lastStatus: null, lastError: null };
      this.state.set(host, st);
    }
    // A probe still running from the previous round is not doubled up.
    if (st.probing) return;
    st.probing = true;
    let ok: boolean;
    try {
      const status = await withTimeout(this.probe(host, hc.path, hc.timeout_ms), hc.timeout_ms);
      st.lastStatus = status;
      st.lastError = null;
      ok = hc.expect_status ? hc.expect_status.includes(status) : status >= 200 && status < 400;
    } catch (err) {
      st.lastStatus = null;
      st.lastError = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      ok = false;
    } finally {
      st.probing = false;
    }
    if (!this.running) return;
    if (ok) {
      st.successes++;
      st.failures = 0;
      if (!host.healthy && st.successes >= hc.rise) this.transition(host, true, st);
    } else {
      st.failures++;
      st.successes = 0;
      if (host.healthy && st.failures >= hc.fall) this.transition(host, false, st);
    }
  }

  private transition(host: Host, up: boolean, st: HostHealth): void {
    host.healthy = up;
    const hc = this.pool.config.health_check!;
    const detail = { upstream: this.pool.name, host: host.address, last_status: st.lastStatus, last_error: st.lastError };
    if (up) this.logger?.info({ ...detail, rise: hc.rise }, 'upstream server is healthy again');
    else this.logger?.warn({ ...detail, fall: hc.fall }, 'upstream server failed its health checks; taken out of rotation');
    this.metrics?.healthTransition(this.pool.name, host.address, up);
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  // The probe should honour its own timeout; this bound is for one that does not.
  return new Promise<T>((resolve, reject) => {
    // Not unref'd: it lives at most timeout_ms and must fire even when nothing else keeps the loop busy.
    const t = setTimeout(() => reject(Object.assign(new Error(`health probe timed out after ${ms} ms`), { code: 'GW_UPSTREAM_TIMEOUT' })), ms + 50);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}
