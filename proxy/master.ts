// `gatewire proxy --workers N` (or `workers:` in the config): NGINX's master
// process. The shared Supervisor (supervisor/supervisor.ts) owns the listening
// socket and keeps N workers (proxy/worker.ts) accepting on it. This process
// also does what must happen once for the whole group:
// - the config is validated here, once; workers get the validated config as a
//   note, at start and on SIGHUP (an invalid file is logged and the running
//   config kept, as with one process);
// - active health checks and DNS re-resolution of `resolve: true` servers run
//   here, one probe per server per interval and one query per name whatever N,
//   and every worker gets the result (UpstreamView);
// - the admin port: /metrics sums the workers' counters and histograms
//   (prom-client's AggregatorRegistry) and keeps process gauges per worker (a
//   sum of heap sizes means nothing), /status lists each worker's pid, RSS,
//   in-flight and requests next to the group's upstreams.
import { AggregatorRegistry, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { ListenAddress } from '../supervisor/listen.ts';
import { createMasterLog, type MasterLog } from '../supervisor/log.ts';
import { Supervisor, type WorkerSnapshot } from '../supervisor/supervisor.ts';
import { type AdminServer, startAdmin } from './admin.ts';
import { ConfigError, loadConfig, type ProxyConfig, type UpstreamConfig } from './config.ts';
import { HealthChecker } from './healthchecks.ts';
import { ProxyMetrics } from './metrics.ts';
import { createTransport, probe } from './upstream-runtime.ts';
import type { Transport } from './transports/transport.ts';
import { UpstreamPool } from './upstreams.ts';
import type { UpstreamView } from './worker.ts';

/** Series the master owns (its health checker's); the workers' copies (never set) are left out. */
const MASTER_SERIES = new Set(['gatewire_upstream_host_up', 'gatewire_upstream_health_transitions_total']);
/** Process gauges: one series per worker (label `worker`, its slot), never summed. */
const perWorker = (name: string) => name.startsWith('process_') || name.startsWith('nodejs_');
/** How often the master looks for health or DNS changes to pass on. */
const SHARE_EVERY_MS = 100;

/** The health checks and DNS of one upstream, for the whole group. */
class GroupUpstream {
  readonly key: string;
  readonly pool: UpstreamPool;
  readonly transport: Transport;
  readonly health: HealthChecker | null;
  lastView = '';
  constructor(cfg: UpstreamConfig, log: MasterLog, metrics: ProxyMetrics) {
    this.key = JSON.stringify(cfg);
    this.pool = new UpstreamPool(cfg, { logger: log });
    this.transport = createTransport(cfg);
    this.health = cfg.health_check
      ? new HealthChecker(this.pool, (host, path, timeoutMs) => probe(this.transport, host, path, timeoutMs), { logger: log, metrics })
      : null;
  }

  /** Resolves once the first DNS round is done, so that workers start with the records. */
  async start(): Promise<void> {
    await this.pool.start();
    this.health?.start();
  }

  view(): UpstreamView {
    return {
      upstream: this.pool.name,
      hosts: this.pool.hosts.filter((h) => !h.draining).map((h) => ({ address: h.address, healthy: h.healthy, ...(h.resolvedFrom ? { resolvedFrom: h.resolvedFrom } : {}) })),
    };
  }

  stop(): void {
    this.health?.stop();
    this.pool.stop();
    void this.transport.close(true);
  }
}

/** Only upstreams with health checks or DNS names need the master. */
const needsMaster = (u: UpstreamConfig) => u.health_check !== null || u.servers.some((s) => s.resolve);

export async function runProxyMaster(opts: { configFile: string; config: ProxyConfig; workers: number; graceMs: number }): Promise<number> {
  let config = opts.config;
  const log = createMasterLog(config.log.level, { name: 'gatewire-proxy', role: 'master' });
  const healthMetrics = new ProxyMetrics({ defaultMetrics: false });
  const { host, port } = config.listen;
  const listen: ListenAddress = { kind: 'tcp', host, port, text: `${host.includes(':') ? `[${host}]` : host}:${port}` };
  let reloads = 0;
  let upstreams = new Map<string, GroupUpstream>();

  const share = () => {
    for (const g of upstreams.values()) {
      const view = g.view();
      const text = JSON.stringify(view);
      if (text === g.lastView) continue;
      g.lastView = text;
      sup.broadcast('upstream', view, `upstream:${view.upstream}`);
    }
  };

  /** The group upstreams of `next`: unchanged ones kept (health state, records), the others started anew. */
  const syncUpstreams = async (next: ProxyConfig): Promise<void> => {
    const kept = new Map<string, GroupUpstream>();
    const starting: Promise<void>[] = [];
    for (const [name, cfg] of Object.entries(next.upstreams)) {
      if (!needsMaster(cfg)) continue;
      const old = upstreams.get(name);
      if (old && old.key === JSON.stringify(cfg)) kept.set(name, old);
      else {
        const g = new GroupUpstream(cfg, log, healthMetrics);
        kept.set(name, g);
        starting.push(g.start());
      }
    }
    for (const [name, g] of upstreams) if (kept.get(name) !== g) g.stop();
    upstreams = kept;
    await Promise.all(starting);
    share();
  };

  const sup: Supervisor = new Supervisor({
    name: 'gatewire proxy',
    workerArgs: ['proxy', '--config', opts.configFile, '--grace', String(opts.graceMs)],
    workers: opts.workers,
    listen: [listen],
    // the proxy has no per-request timeout to derive this from: a worker blocked this long is lost anyway
    heartbeatTimeoutMs: 30_000,
    gracefulTimeoutMs: opts.graceMs,
    log,
    onReload: async () => {
      let next: ProxyConfig;
      try {
        next = await loadConfig(opts.configFile);
      } catch (err) {
        const msg = err instanceof ConfigError ? err.message : (err as Error).message;
        log.error({ config: opts.configFile, problems: msg }, 'configuration reload failed; keeping the running configuration');
        process.stderr.write(`${msg}\ngatewire proxy: reload failed, keeping the running configuration\n`);
        return;
      }
      const changed = Object.keys(next.upstreams).filter((n) => JSON.stringify(next.upstreams[n]) !== JSON.stringify(config.upstreams[n]));
      if (next.listen.host !== config.listen.host || next.listen.port !== config.listen.port || JSON.stringify(next.admin) !== JSON.stringify(config.admin)) {
        log.warn('listen and admin addresses change only on restart; kept the running ones');
      }
      if (next.workers !== config.workers) log.warn('the number of workers changes only on restart; kept the running one');
      await syncUpstreams(next);
      config = next;
      reloads++;
      sup.broadcast('config', next, 'config');
      // IPC keeps order: a worker that answers this has swapped the new config in
      await sup.callAll('sync');
      log.info({ config: opts.configFile, changed }, 'configuration reloaded');
      process.stdout.write(`gatewire proxy: configuration reloaded (${changed.length ? `new: ${changed.join(', ')}` : 'no upstream changed'})\n`);
    },
  });

  // the admin port answers before the first worker accepts: whoever waits for the proxy's port
  // (gatewire up, an orchestrator) can ask /status at once
  let admin: AdminServer | null = null;
  if (config.admin) {
    const metrics = {
      contentType: AggregatorRegistry.PROMETHEUS_CONTENT_TYPE ?? healthMetrics.contentType,
      text: () => groupMetrics(sup, healthMetrics),
    };
    const status = () => groupStatus(sup, { config, reloads, upstreams });
    try {
      admin = await startAdmin({ host: config.admin.host, port: config.admin.port, metrics, status });
    } catch (err) {
      process.stderr.write(`gatewire proxy: cannot listen on admin ${config.admin.host}:${config.admin.port}: ${(err as Error).message}\n`);
      return 1;
    }
  }
  await syncUpstreams(config);
  sup.broadcast('config', config, 'config');
  const failed = await sup.start();
  if (failed !== null) {
    for (const g of upstreams.values()) g.stop();
    await admin?.close();
    process.stderr.write(`gatewire proxy: cannot listen on ${listen.text}: ${failed}\n`);
    return 1;
  }
  const sharing = setInterval(share, SHARE_EVERY_MS);
  sup.handleSignals(async () => {
    clearInterval(sharing);
    for (const g of upstreams.values()) g.stop();
    await admin?.close();
    process.exit(0);
  });
  const n = opts.workers;
  process.stdout.write(`gatewire proxy listening on http://${sup.bound[0]} (${n} worker${n === 1 ? '' : 's'})${admin ? ` (admin http://${admin.address})` : ''}\n`);
  return -1;
}

/** The group's Prometheus exposition: workers' series summed, process gauges per worker, health from the master. */
async function groupMetrics(sup: Supervisor, healthMetrics: ProxyMetrics): Promise<string> {
  const answers = await sup.callAll('metrics');
  const sets: MetricObjectWithValues<MetricValue<string>>[][] = [];
  for (const { worker, data } of answers) {
    const own = (data as MetricObjectWithValues<MetricValue<string>>[]).filter((m) => !MASTER_SERIES.has(m.name));
    sets.push(own.map((m) => (perWorker(m.name) ? { ...m, aggregator: 'sum', values: m.values.map((v) => ({ ...v, labels: { ...v.labels, worker: String(worker.slot) } })) } : m)));
  }
  const master = (await healthMetrics.registry.getMetricsAsJSON()).filter((m) => MASTER_SERIES.has(m.name));
  sets.push(master as MetricObjectWithValues<MetricValue<string>>[]);
  return AggregatorRegistry.aggregate(sets as never).metrics();
}

interface WorkerStatus {
  connections: number;
  upstreams: Array<{ name: string; inflight: number; hosts: Array<Record<string, unknown> & { address: string; inflight: number; requests: number; down: boolean }> }>;
  process: { rss: number; heapUsed: number; fds: number | null; handles: Record<string, number> };
}

/** /status for the group: each worker (pid, RSS, in-flight, requests), totals, and each upstream's servers summed over the workers. */
async function groupStatus(sup: Supervisor, state: { config: ProxyConfig; reloads: number; upstreams: Map<string, GroupUpstream> }): Promise<object> {
  const answers = await sup.callAll('status');
  const byPid = new Map<number, WorkerStatus>();
  for (const a of answers) if (a.data) byPid.set(a.worker.pid, a.data as WorkerStatus);
  const workers = sup.snapshot().map((w: WorkerSnapshot) => {
    const s = byPid.get(w.pid);
    return { ...w, connections: s?.connections ?? w.connections, heapUsed: s?.process.heapUsed, fds: s?.process.fds };
  });
  const totals = { requests: 0, inflight: 0, connections: 0, restarts: 0 };
  for (const w of workers) {
    totals.requests += w.requests;
    totals.inflight += w.inflight;
    totals.connections += w.connections;
    totals.restarts += w.restarts;
  }
  // one entry per upstream: hosts merged by address, counts summed, health from the master's checks
  const upstreams = new Map<string, { name: string; inflight: number; hosts: Map<string, Record<string, unknown>> }>();
  for (const s of byPid.values()) {
    for (const u of s.upstreams) {
      let merged = upstreams.get(u.name);
      if (!merged) upstreams.set(u.name, (merged = { ...u, inflight: 0, hosts: new Map() }));
      merged.inflight += u.inflight;
      for (const h of u.hosts) {
        const m = merged.hosts.get(h.address) as (typeof h & { down_in_workers: number }) | undefined;
        if (!m) merged.hosts.set(h.address, { ...h, down_in_workers: h.down ? 1 : 0 });
        else {
          m.inflight += h.inflight;
          m.requests += h.requests;
          m.down_in_workers += h.down ? 1 : 0;
          m.down = m.down || h.down;
        }
      }
    }
  }
  for (const [name, g] of state.upstreams) {
    const merged = upstreams.get(name);
    if (!merged) continue;
    for (const h of g.pool.hosts) {
      const m = merged.hosts.get(h.address);
      if (m) m.healthy = h.healthy;
    }
  }
  return {
    pid: process.pid,
    reloads: state.reloads,
    config: state.config.file,
    workers,
    totals,
    upstreams: [...upstreams.values()].map((u) => ({ ...u, hosts: [...u.hosts.values()] })),
    master: { rss: process.memoryUsage.rss() },
  };
}
