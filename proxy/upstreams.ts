// UpstreamPool: the hosts of one upstream and the choice among them. Servers with
// `resolve: true` become one Host per A/AAAA record of their name, re-resolved every
// resolve_interval and on demand; records that disappear are drained (in-flight
// requests finish, no new ones), records that appear get traffic at once. A name
// that fails to resolve keeps its last known records, like NGINX's resolver with
// `valid=`: a DNS outage must not empty a pool whose servers are fine.
import { promises as dnsPromises } from 'node:dns';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import pino from 'pino';
import type { ServerConfig, UpstreamConfig } from './config.ts';
import { parseAddress } from '../protocol/addresses.ts';
import { Host } from './hosts.ts';
import { createPolicy, RoundRobin, type SelectionContext, type SelectionPolicy } from './selection-policies.ts';

/** Resolves a DNS name to its addresses (IPv4 and IPv6, any order). */
export type NameResolver = (name: string) => Promise<string[]>;

export interface PoolLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export interface PoolDeps {
  /** Replaces DNS (tests). */
  resolver?: NameResolver;
  logger?: PoolLogger;
  /** For random_two (tests). */
  random?: () => number;
}

let defaultLogger: PoolLogger | null = null;
function fallbackLogger(): PoolLogger {
  defaultLogger ??= pino({ name: 'gatewire-proxy' }, pino.destination(2));
  return defaultLogger;
}

/** Least time between two re-resolutions asked for by reresolve(), so a burst of connection failures makes one query. */
const RERESOLVE_MIN_GAP_MS = 1000;

/**
 * The resolver a pool uses by default: the configured name servers through c-ares
 * (resolve4 + resolve6, like NGINX's `resolver`), or, with none configured, the
 * system's getaddrinfo, which honours /etc/hosts and the search domains that
 * Docker's and Kubernetes' service names depend on.
 */
export function createNameResolver(opts: { servers: string[]; timeout_ms: number }): NameResolver {
  if (opts.servers.length === 0) {
    return async (name) => {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(Object.assign(new Error(`DNS lookup of ${name} timed out`), { code: 'ETIMEOUT' })), opts.timeout_ms);
        timer.unref();
      });
      try {
        const records = await Promise.race([dnsPromises.lookup(name, { all: true, verbatim: true }), timeout]);
        return records.map((r) => r.address);
      } finally {
        clearTimeout(timer);
      }
    };
  }
  const resolver = new dnsPromises.Resolver({ timeout: opts.timeout_ms, tries: 2 });
  resolver.setServers(opts.servers);
  return async (name) => {
    const [v4, v6] = await Promise.allSettled([resolver.resolve4(name), resolver.resolve6(name)]);
    if (v4.status === 'rejected' && v6.status === 'rejected') {
      const noData = (e: any) => e?.code === 'ENODATA';
      if (noData(v4.reason) && noData(v6.reason)) return [];
      throw noData(v4.reason) ? v6.reason : v4.reason;
    }
    return [...(v4.status === 'fulfilled' ? v4.value : []), ...(v6.status === 'fulfilled' ? v6.value : [])];
  };
}

/** A `resolve: true` server: its name and the hosts its records currently give (draining ones included). */
interface ResolvedServer {
  server: ServerConfig;
  name: string;
  port: number;
  byIp: Map<string, Host>;
  resolvedOnce: boolean;
}

type Entry = { kind: 'static'; host: Host } | { kind: 'dns'; rs: ResolvedServer };

const compareIp = (a: string, b: string): number => {
  const fa = net.isIP(a);
  const fb = net.isIP(b);
  if (fa !== fb) return fa - fb;
  if (fa === 4) {
    const na = a.split('.').map(Number);
    const nb = b.split('.').map(Number);
    for (let i = 0; i < 4; i++) if (na[i] !== nb[i]) return na[i] - nb[i];
    return 0;
  }
  return a < b ? -1 : a > b ? 1 : 0;
};

export interface PoolSnapshot {
  name: string;
  protocol: string;
  balance: string;
  hosts: ReturnType<Host['snapshot']>[];
}

export class UpstreamPool extends EventEmitter {
  readonly name: string;
  readonly config: UpstreamConfig;
  private readonly entries: Entry[] = [];
  private readonly resolved: ResolvedServer[] = [];
  private readonly policy: SelectionPolicy;
  private readonly backupPolicy = new RoundRobin();
  private readonly resolveName: NameResolver;
  private readonly logger: PoolLogger;
  private hostList: readonly Host[] = [];
  private primaries: readonly Host[] = [];
  private backups: readonly Host[] = [];
  private timer: NodeJS.Timeout | null = null;
  private resolving: Promise<void> | null = null;
  private again = false;
  private lastResolveAt = 0;
  private started = false;
  private stopped = false;

  constructor(cfg: UpstreamConfig, deps: PoolDeps = {}) {
    super();
    this.name = cfg.name;
    this.config = cfg;
    this.policy = createPolicy(cfg, deps.random);
    this.logger = deps.logger ?? fallbackLogger();
    this.resolveName = deps.resolver ?? createNameResolver(cfg.resolver ?? { servers: [], timeout_ms: 2000 });
    for (const server of cfg.servers) {
      if (server.resolve) {
        const target = parseAddress(server.address);
        if (target.kind !== 'tcp') throw new Error(`resolve: true needs a host:port address, got ${server.address}`);
        const rs: ResolvedServer = { server, name: target.host, port: target.port, byIp: new Map(), resolvedOnce: false };
        this.resolved.push(rs);
        this.entries.push({ kind: 'dns', rs });
      } else {
        this.entries.push({ kind: 'static', host: this.makeHost(server, server.address) });
      }
    }
    this.rebuild();
  }

  /** Current hosts, in config order (a resolved name's hosts by address); includes draining ones until their inflight is 0. */
  get hosts(): readonly Host[] {
    return this.hostList;
  }

  /** True when at least one server has `resolve: true`. */
  get usesDns(): boolean {
    return this.resolved.length > 0;
  }

  /**
   * Primaries first; backups only when no primary is available (NGINX's `backup`).
   * `exclude` holds the hosts a retry must avoid. null → no server can take it (503).
   */
  select(ctx: SelectionContext, exclude?: ReadonlySet<Host>): Host | null {
    const now = Date.now();
    const primary = this.pick(this.primaries, this.policy, ctx, exclude, now);
    if (primary) return primary;
    return this.pick(this.backups, this.backupPolicy, ctx, exclude, now);
  }

  private pick(tier: readonly Host[], policy: SelectionPolicy, ctx: SelectionContext, exclude: ReadonlySet<Host> | undefined, now: number): Host | null {
    if (tier.length === 0) return null;
    let allUsable = true;
    for (const h of tier) {
      if (!h.available(now) || exclude?.has(h)) {
        allUsable = false;
        break;
      }
    }
    if (allUsable) return policy.select(tier, ctx, tier);
    const candidates = tier.filter((h) => h.available(now) && !exclude?.has(h));
    return candidates.length === 0 ? null : policy.select(candidates, ctx, tier);
  }

  /**
   * A try on `host` failed in a way that counts against it (passive health, max_fails). As in NGINX,
   * a group with a single server never considers it unavailable: taking it out only turns every
   * following request into a 503.
   */
  hostFailed(host: Host): void {
    if (this.primaries.length + this.backups.length > 1) host.markFailure();
  }

  /**
   * `host` refused a connection (nothing listens: stopping, not started yet, gone): the requests
   * behind skip it at once, for fail_timeout, instead of each finding out for itself.
   */
  hostRefused(host: Host): void {
    if (this.primaries.length + this.backups.length > 1) host.markDown();
  }

  /** Servers a request may be tried on: every host that is not draining. */
  get size(): number {
    return this.primaries.length + this.backups.length;
  }

  /** Starts DNS resolution of `resolve: true` servers; resolves once the first round is done (it never rejects). */
  start(): Promise<void> {
    if (this.started || this.resolved.length === 0) return this.resolving ?? Promise.resolve();
    this.started = true;
    return this.runResolve();
  }

  /** Re-resolve now (called by core on a connection failure to a resolved host); coalesced and rate-limited. */
  reresolve(): Promise<void> {
    if (this.resolved.length === 0 || this.stopped) return Promise.resolve();
    if (this.resolving) {
      this.again = true;
      return this.resolving;
    }
    const wait = this.lastResolveAt + RERESOLVE_MIN_GAP_MS - Date.now();
    if (wait > 0) {
      // The scheduled round comes soon enough when it is nearer than the gap.
      this.schedule(wait);
      return Promise.resolve();
    }
    return this.runResolve();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  snapshot(now = Date.now()): PoolSnapshot {
    return {
      name: this.name,
      protocol: this.config.protocol,
      balance: this.config.balance,
      hosts: this.hostList.map((h) => h.snapshot(now)),
    };
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.runResolve();
    }, delayMs);
    this.timer.unref();
  }

  private runResolve(): Promise<void> {
    if (this.resolving) {
      this.again = true;
      return this.resolving;
    }
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.resolving = (async () => {
      try {
        do {
          this.again = false;
          this.lastResolveAt = Date.now();
          await Promise.all(
            this.resolved.map((rs) =>
              // A throwing 'hosts' listener must not become an unhandled rejection of a timer-driven round.
              this.resolveOne(rs).catch((err: Error) => this.logger.warn({ upstream: this.name, name: rs.name, err: err.message }, 'DNS update failed')),
            ),
          );
        } while (this.again && !this.stopped);
      } finally {
        this.resolving = null;
        this.schedule(this.config.resolve_interval_ms);
      }
    })();
    return this.resolving;
  }

  private async resolveOne(rs: ResolvedServer): Promise<void> {
    let ips: string[];
    try {
      ips = await this.resolveName(rs.name);
    } catch (err) {
      if (this.stopped) return;
      const e = err as NodeJS.ErrnoException;
      this.logger.warn(
        { upstream: this.name, name: rs.name, err: e.code ?? e.message, kept: [...rs.byIp.keys()] },
        'DNS resolution failed; keeping the last known records',
      );
      this.emit('resolved', rs.name, null);
      return;
    }
    if (this.stopped) return;
    const fresh = [...new Set(ips)];
    if (fresh.length === 0) {
      this.logger.warn({ upstream: this.name, name: rs.name, kept: [...rs.byIp.keys()] }, 'DNS name has no A/AAAA records; keeping the last known records');
      this.emit('resolved', rs.name, null);
      return;
    }
    const wanted = new Set(fresh);
    const added: Host[] = [];
    const removed: Host[] = [];
    for (const ip of fresh) {
      const known = rs.byIp.get(ip);
      if (known === undefined) {
        const host = this.makeHost(rs.server, net.isIPv6(ip) ? `[${ip}]:${rs.port}` : `${ip}:${rs.port}`, rs.server.address);
        // A replica DNS lists may not listen yet: with health checks it joins once it passed `rise`
        // of them (the records of the first resolution are trusted, as static servers are).
        if (rs.resolvedOnce && this.config.health_check !== null) host.healthy = false;
        rs.byIp.set(ip, host);
        added.push(host);
      } else if (known.draining) {
        // Back before it finished draining: the same Host takes traffic again.
        known.draining = false;
        added.push(known);
      }
    }
    const idle: Host[] = [];
    for (const [ip, host] of rs.byIp) {
      if (wanted.has(ip) || host.draining) continue;
      host.draining = true;
      removed.push(host);
      if (host.inflight === 0) idle.push(host);
    }
    for (const host of idle) rs.byIp.delete(ipOf(host));
    rs.resolvedOnce = true;
    if (added.length > 0 || removed.length > 0) {
      this.rebuild();
      this.logger.info(
        { upstream: this.name, name: rs.name, added: added.map((h) => h.address), removed: removed.map((h) => h.address) },
        'DNS records changed',
      );
      this.emit('hosts', added, removed);
      for (const host of idle) this.emit('drained', host);
    }
    this.emit('resolved', rs.name, fresh);
  }

  private makeHost(server: ServerConfig, address: string, resolvedFrom?: string): Host {
    const host = new Host({
      address,
      weight: server.weight,
      backup: server.backup,
      max_fails: server.max_fails ?? this.config.max_fails,
      fail_timeout_ms: server.fail_timeout_ms ?? this.config.fail_timeout_ms,
      max_conns: server.max_conns,
      resolvedFrom,
    });
    if (resolvedFrom) host.onIdle = (h) => this.onDrained(h);
    return host;
  }

  /** A draining host's last request finished: it leaves the pool. */
  private onDrained(host: Host): void {
    for (const rs of this.resolved) {
      const ip = ipOf(host);
      if (rs.byIp.get(ip) === host && host.draining) {
        rs.byIp.delete(ip);
        this.rebuild();
        this.emit('drained', host);
        return;
      }
    }
  }

  private rebuild(): void {
    const list: Host[] = [];
    for (const e of this.entries) {
      if (e.kind === 'static') list.push(e.host);
      else list.push(...[...e.rs.byIp.entries()].sort((a, b) => compareIp(a[0], b[0])).map((x) => x[1]));
    }
    this.hostList = list;
    this.primaries = list.filter((h) => !h.backup && !h.draining);
    this.backups = list.filter((h) => h.backup && !h.draining);
  }
}

function ipOf(host: Host): string {
  return host.target.kind === 'tcp' ? host.target.host : host.address;
}
