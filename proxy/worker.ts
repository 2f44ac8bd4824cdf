// One worker of `gatewire proxy --workers N`: the same ProxyServer as a
// single-process proxy, accepting on the master's listening socket. What must
// be one for the whole group comes from the master as notes:
// - the config: validated once there, sent before the worker accepts and again
//   on each SIGHUP (the worker swaps it in like a single proxy does, so a
//   reload restarts nothing and keeps warm upstream connections);
// - upstream servers' health (the master runs the health checks) and the
//   records of `resolve: true` names (the master queries DNS): the worker's
//   config carries no health_check, and its pools resolve names from the
//   master's records instead of asking DNS.
// Passive health (max_fails) stays each worker's own, as in NGINX without a
// shared zone. The admin port is the master's; it asks workers for their
// metrics and status.
import { joinSupervisor, workerId } from '../supervisor/worker.ts';
import { createProxyLog } from './access-log.ts';
import { startYoungGc } from './young-gc.ts';
import type { ProxyConfig } from './config.ts';
import { ProxyMetrics } from './metrics.ts';
import { ProxyServer } from './server.ts';

/** Notes from the master (proxy/master.ts). */
export type UpstreamView = { upstream: string; hosts: Array<{ address: string; healthy: boolean; resolvedFrom?: string }> };
export type ProxyNote = { what: 'config'; data: ProxyConfig } | { what: 'upstream'; data: UpstreamView };

/** The config a worker runs: the master's, without what the master does for the whole group. */
export function workerConfig(config: ProxyConfig): ProxyConfig {
  const upstreams: ProxyConfig['upstreams'] = {};
  for (const [name, u] of Object.entries(config.upstreams)) upstreams[name] = { ...u, health_check: null };
  return { ...config, upstreams, admin: null };
}

export async function runProxyWorker(graceMs: number): Promise<number> {
  const metrics = new ProxyMetrics();
  /** `resolve: true` names → the addresses the master last found (ip strings). */
  const records = new Map<string, string[]>();
  /** Upstream → address → healthy, per the master's health checks. */
  const health = new Map<string, Map<string, boolean>>();
  let proxy: ProxyServer | null = null;
  let flushLog = () => {};
  let configured!: (p: ProxyServer) => void;
  const ready = new Promise<ProxyServer>((resolve) => {
    configured = resolve;
  });

  const resolver = async (name: string): Promise<string[]> => {
    const ips = records.get(name);
    if (ips === undefined) throw Object.assign(new Error(`no records from the master yet for ${name}`), { code: 'EAGAIN' });
    return ips;
  };

  const applyHealth = (p: ProxyServer, upstream: string) => {
    const states = health.get(upstream);
    const pool = p.pool(upstream);
    if (!states || !pool) return;
    for (const host of pool.hosts) {
      const up = states.get(host.address);
      if (up !== undefined) host.healthy = up;
    }
  };

  const onNote = (what: string, data: unknown) => {
    const note = { what, data } as ProxyNote;
    if (note.what === 'config') {
      const cfg = workerConfig(note.data);
      if (proxy === null) {
        const { log, flush } = createProxyLog(cfg.log.level, cfg.log.flush_interval_ms);
        flushLog = flush;
        startYoungGc();
        proxy = new ProxyServer(cfg, { logger: log.child({ worker: workerId() }), metrics, resolver });
        for (const upstream of health.keys()) applyHealth(proxy, upstream);
        configured(proxy);
      } else {
        flushLog();
        const { changed } = proxy.reload(cfg);
        for (const upstream of changed) applyHealth(proxy, upstream);
        proxy.log.info({ config: cfg.file, changed }, 'configuration reloaded');
      }
    } else if (note.what === 'upstream') {
      const view = note.data;
      const byName = new Map<string, string[]>();
      const states = new Map<string, boolean>();
      for (const h of view.hosts) {
        states.set(h.address, h.healthy);
        if (h.resolvedFrom) {
          const name = h.resolvedFrom.slice(0, h.resolvedFrom.lastIndexOf(':'));
          const ip = h.address.slice(0, h.address.lastIndexOf(':')).replace(/^\[|\]$/g, '');
          byName.set(name, [...(byName.get(name) ?? []), ip]);
        }
      }
      health.set(view.upstream, states);
      let dnsChanged = false;
      for (const [name, ips] of byName) {
        if (JSON.stringify(records.get(name)) !== JSON.stringify(ips)) dnsChanged = true;
        records.set(name, ips);
      }
      if (proxy !== null) {
        if (dnsChanged) void proxy.pool(view.upstream)?.reresolve().then(() => proxy && applyHealth(proxy, view.upstream));
        applyHealth(proxy, view.upstream);
      }
    }
  };

  /** Requests answered, as /metrics counts them. */
  const answered = async (): Promise<number> => {
    const m = await metrics.requests.get();
    let n = 0;
    for (const v of m.values) n += v.value;
    return n;
  };

  joinSupervisor(
    {
      listen: async (handle) => {
        const p = await ready;
        await p.listen(handle);
      },
      stop: async (why) => {
        if (proxy === null) return;
        proxy.log.info({ why }, 'worker stopping gracefully');
        await Promise.race([proxy.close(), new Promise((r) => setTimeout(r, graceMs).unref())]);
      },
      load: async () => {
        const s = proxy?.status() as { connections: number; upstreams: Array<{ inflight: number }> } | undefined;
        let inflight = 0;
        for (const u of s?.upstreams ?? []) inflight += u.inflight;
        return { requests: await answered(), inflight, connections: s?.connections ?? 0 };
      },
      call: async (what) => {
        if (what === 'metrics') return metrics.registry.getMetricsAsJSON();
        if (what === 'status') return proxy?.status() ?? null;
        // answered after every note sent before it (the master waits for it after a reload)
        if (what === 'sync') return true;
        throw new Error(`unknown call ${what}`);
      },
      note: onNote,
    },
    { heartbeatMs: 1000 },
  );
  return -1;
}
