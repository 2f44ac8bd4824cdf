// Rate zones (NGINX `limit_req_zone` + `limit_req ... burst=N nodelay`): each key may send `rate`
// requests per second or minute, plus a burst of `burst` more at once; past that, 429 with
// Retry-After and the IETF draft's RateLimit / RateLimit-Policy headers. The accounting is GCRA
// (the leaky bucket NGINX implements, kept as one "theoretical arrival time" per key), either in
// this process's memory or in Redis, where one Lua script makes each check atomic, so every proxy
// process and machine sharing the store enforces one limit together.
//
// Not @fastify/rate-limit: it counts fixed windows (a client may send twice the limit across a
// window edge, where NGINX's leaky bucket never lets through more than rate + burst), it is
// configured per Fastify route at boot (our routes are config routes inside one catch-all handler,
// swapped on SIGHUP), and on a store failure it can only skip the limit, not fail closed. We do use
// ioredis, the client it uses, with its script caching (EVALSHA, EVAL after a Redis restart).
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import type { Redis, RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import type { LimitStoreConfig, RateZoneConfig } from './config/edge.ts';
import type { EdgeMetrics } from './edge-metrics.ts';

/** [allowed 0|1, ms until a request would pass, ms until the bucket is empty again]. */
type GcraResult = [number, number, number];

export interface RateStore {
  readonly kind: 'memory' | 'redis';
  take(zone: string, key: string, emissionMs: number, toleranceMs: number): GcraResult | Promise<GcraResult>;
  close(): Promise<void>;
}

/** Keys kept per zone in memory; past it the drained ones go, then the oldest (NGINX evicts from a full zone too). */
const MEMORY_KEYS_PER_ZONE = 100_000;

/** A full zone: every drained bucket goes (they equal absent ones); if none had, the first tenth in insertion order. */
function evict(keys: Map<string, number>, now: number): void {
  for (const [k, tat] of keys) if (tat <= now) keys.delete(k);
  if (keys.size <= MEMORY_KEYS_PER_ZONE) return;
  let n = Math.ceil(MEMORY_KEYS_PER_ZONE / 10);
  for (const k of keys.keys()) {
    keys.delete(k);
    if (--n === 0) break;
  }
}

export class MemoryRateStore implements RateStore {
  readonly kind = 'memory' as const;
  private readonly zones = new Map<string, Map<string, number>>();
  private readonly sweeper: NodeJS.Timeout;

  constructor() {
    // states whose bucket has drained are the same as absent ones
    this.sweeper = setInterval(() => {
      const now = Date.now();
      for (const keys of this.zones.values()) for (const [k, tat] of keys) if (tat <= now) keys.delete(k);
    }, 10_000);
    this.sweeper.unref();
  }

  take(zone: string, key: string, emissionMs: number, toleranceMs: number): GcraResult {
    let keys = this.zones.get(zone);
    if (keys === undefined) this.zones.set(zone, (keys = new Map()));
    const now = Date.now();
    const prev = keys.get(key);
    const tat = prev === undefined || prev < now ? now : prev;
    const diff = tat - now;
    if (diff > toleranceMs) return [0, diff - toleranceMs, diff];
    const next = tat + emissionMs;
    // Updated in place: a delete and re-insert per request (to keep Map order as recency) would
    // churn this long-lived Map once per request, and such a Map keeps every request alive through
    // the young generation's collections (see protocol/stream-table.ts).
    keys.set(key, next);
    if (keys.size > MEMORY_KEYS_PER_ZONE) evict(keys, now);
    return [1, 0, next - now];
  }

  close(): Promise<void> {
    clearInterval(this.sweeper);
    return Promise.resolve();
  }
}

// Redis's own clock (TIME) so that processes on machines with skewed clocks still share one bucket.
const GCRA_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local emission = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local diff = tat - now
if diff > tolerance then
  return {0, math.ceil(diff - tolerance), math.ceil(diff)}
end
local nexttat = tat + emission
redis.call('SET', KEYS[1], string.format('%.3f', nexttat), 'PX', math.ceil(nexttat - now) + 1000)
return {1, 0, math.ceil(nexttat - now)}
`;

// loaded only when a config names a Redis store: ioredis costs ~160 ms and ~24 MB of RSS at import
const requireOnDemand = createRequire(import.meta.url);

type GcraClient = Redis & { gatewireGcra(key: string, emission: string, tolerance: string): Promise<GcraResult> };

export class RedisRateStore implements RateStore {
  readonly kind = 'redis' as const;
  private readonly client: GcraClient;
  private readonly prefix: string;

  constructor(cfg: LimitStoreConfig, log: Logger) {
    this.prefix = cfg.prefix;
    let lastLog = 0;
    const RedisClient = (requireOnDemand('ioredis') as { Redis: new (url: string, o: RedisOptions) => Redis }).Redis;
    this.client = new RedisClient(cfg.redis as string, {
      // a check never waits for a connection: with Redis away it fails at once (on_store_error)
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: cfg.timeout_ms,
      connectTimeout: Math.max(1000, cfg.timeout_ms),
      // keep trying to come back, at most a second apart
      retryStrategy: (times: number) => Math.min(50 * times, 1000),
      lazyConnect: false,
    }) as GcraClient;
    this.client.defineCommand('gatewireGcra', { numberOfKeys: 1, lua: GCRA_LUA });
    // without a listener an 'error' event would crash the process; one line per 5 s is enough
    this.client.on('error', (err: Error) => {
      const now = Date.now();
      if (now - lastLog < 5000) return;
      lastLog = now;
      log.warn({ err: { message: err.message, code: (err as NodeJS.ErrnoException).code } }, 'rate limit store (redis) unavailable');
    });
    this.client.on('ready', () => log.info({ store: 'redis' }, 'rate limit store (redis) connected'));
  }

  take(zone: string, key: string, emissionMs: number, toleranceMs: number): Promise<GcraResult> {
    const k = key.length > 200 ? createHash('sha256').update(key).digest('base64url') : key;
    return this.client.gatewireGcra(`${this.prefix}rate:${zone}:${k}`, emissionMs.toFixed(3), toleranceMs.toFixed(3));
  }

  async close(): Promise<void> {
    this.client.disconnect();
  }
}

export interface RateVerdict {
  /** 0 = pass; 429 over the rate; 503 the store failed and on_store_error is deny. */
  status: 0 | 429 | 503;
  /** RateLimit and RateLimit-Policy (and Retry-After when refused), to add to the response. */
  headers: Array<[string, string]>;
  /** ms to hold a passing request so that the burst goes out at the rate (nodelay: false); 0 = at once. */
  delayMs: number;
}

const PASS: RateVerdict = { status: 0, headers: [], delayMs: 0 };

class RateZone {
  readonly cfg: RateZoneConfig;
  readonly emissionMs: number;
  readonly toleranceMs: number;
  readonly policy: string;
  constructor(cfg: RateZoneConfig) {
    this.cfg = cfg;
    this.emissionMs = cfg.period_ms / cfg.rate;
    this.toleranceMs = cfg.burst * this.emissionMs;
    // draft-ietf-httpapi-ratelimit-headers: quota q requests per window w seconds
    this.policy = `"${cfg.name}";q=${cfg.rate};w=${cfg.period_ms / 1000}${cfg.burst > 0 ? `;burst=${cfg.burst}` : ''}`;
  }
}

/** The rate zones of the running config and the store they count in (kept across reloads when unchanged). */
export class RateLimits {
  private zones = new Map<string, RateZone>();
  private store: RateStore;
  private storeKey: string;
  private storeCfg: LimitStoreConfig;
  private readonly metrics: EdgeMetrics | null;
  private readonly log: Logger;
  private lastErrorLog = 0;

  constructor(zones: Record<string, RateZoneConfig>, store: LimitStoreConfig, metrics: EdgeMetrics | null, log: Logger) {
    this.metrics = metrics;
    this.log = log;
    this.storeCfg = store;
    this.storeKey = JSON.stringify(store);
    this.store = this.openStore(store);
    this.setZones(zones);
  }

  private openStore(cfg: LimitStoreConfig): RateStore {
    return cfg.redis === null ? new MemoryRateStore() : new RedisRateStore(cfg, this.log);
  }

  private setZones(zones: Record<string, RateZoneConfig>): void {
    this.zones = new Map(Object.values(zones).map((z) => [z.name, new RateZone(z)]));
  }

  /** A new config: zones replaced, the store kept (and its counts) unless its settings changed. */
  update(zones: Record<string, RateZoneConfig>, store: LimitStoreConfig): void {
    this.setZones(zones);
    const key = JSON.stringify(store);
    if (key === this.storeKey) return;
    void this.store.close();
    this.storeCfg = store;
    this.storeKey = key;
    this.store = this.openStore(store);
  }

  get storeKind(): 'memory' | 'redis' {
    return this.store.kind;
  }

  /** Checks every zone of a route against its key value; '' keys are not limited. */
  check(names: readonly string[], keyOf: (zone: RateZoneConfig) => string): RateVerdict | Promise<RateVerdict> {
    if (names.length === 1) {
      const zone = this.zones.get(names[0]);
      if (zone === undefined) return PASS;
      const key = keyOf(zone.cfg);
      if (key === '') return PASS;
      let r: GcraResult | Promise<GcraResult>;
      try {
        r = this.store.take(zone.cfg.name, key, zone.emissionMs, zone.toleranceMs);
      } catch (err) {
        return this.storeFailed(err);
      }
      if (Array.isArray(r)) return this.verdict([zone], [r]);
      return r.then(
        (res) => this.verdict([zone], [res]),
        (err) => this.storeFailed(err),
      );
    }
    const zones: RateZone[] = [];
    const results: Array<GcraResult | Promise<GcraResult>> = [];
    for (const n of names) {
      const zone = this.zones.get(n);
      if (zone === undefined) continue;
      const key = keyOf(zone.cfg);
      if (key === '') continue;
      zones.push(zone);
      try {
        results.push(this.store.take(zone.cfg.name, key, zone.emissionMs, zone.toleranceMs));
      } catch (err) {
        return this.storeFailed(err);
      }
    }
    if (zones.length === 0) return PASS;
    if (results.every((r) => Array.isArray(r))) return this.verdict(zones, results as GcraResult[]);
    return Promise.all(results).then(
      (res) => this.verdict(zones, res),
      (err) => this.storeFailed(err),
    );
  }

  private verdict(zones: RateZone[], results: GcraResult[]): RateVerdict {
    // the zone that refuses (or, all passing, the one with the fewest requests left) speaks in the headers
    let speaker = -1;
    let speakerRemaining = Number.POSITIVE_INFINITY;
    let refused = false;
    let delayMs = 0;
    for (let i = 0; i < zones.length; i++) {
      const z = zones[i];
      const [allowed, , resetMs] = results[i];
      const remaining = allowed ? Math.max(0, Math.floor((z.toleranceMs - resetMs + z.emissionMs) / z.emissionMs)) : 0;
      if (!allowed) {
        if (z.cfg.dry_run) {
          this.metrics?.rate(z.cfg.name, 'dry_run_rejected');
          this.log.info({ zone: z.cfg.name, dry_run: true }, 'rate limit exceeded (dry_run: passed)');
        } else {
          this.metrics?.rate(z.cfg.name, 'rejected');
          if (!refused) speaker = i;
          refused = true;
          continue;
        }
      } else {
        // how far ahead of its schedule this request is: the burst's share, sent on at the rate
        const ahead = z.cfg.nodelay || z.cfg.dry_run ? 0 : Math.max(0, resetMs - z.emissionMs);
        if (ahead > delayMs) delayMs = ahead;
        this.metrics?.rate(z.cfg.name, ahead > 0 ? 'delayed' : 'passed');
      }
      if (!refused && remaining < speakerRemaining) {
        speaker = i;
        speakerRemaining = remaining;
      }
    }
    const z = zones[speaker];
    const [allowed, retryMs, resetMs] = results[speaker];
    const headers: Array<[string, string]> = [['ratelimit-policy', z.policy]];
    if (refused) {
      const retryS = Math.max(1, Math.ceil(retryMs / 1000));
      headers.push(['ratelimit', `"${z.cfg.name}";r=0;t=${retryS}`], ['retry-after', String(retryS)]);
      return { status: 429, headers, delayMs: 0 };
    }
    const remaining = allowed ? speakerRemaining : 0;
    headers.push(['ratelimit', `"${z.cfg.name}";r=${remaining};t=${Math.max(0, Math.ceil(resetMs / 1000))}`]);
    return { status: 0, headers, delayMs };
  }

  private storeFailed(err: unknown): RateVerdict {
    const action = this.storeCfg.on_store_error;
    this.metrics?.storeError(this.store.kind, action);
    const now = Date.now();
    if (now - this.lastErrorLog >= 5000) {
      this.lastErrorLog = now;
      this.log.error({ err: { message: (err as Error).message }, on_store_error: action }, `rate limit store failed: requests are ${action === 'allow' ? 'passed unlimited' : 'refused with 503'} until it answers again`);
    }
    return action === 'allow' ? PASS : { status: 503, headers: [['retry-after', '1']], delayMs: 0 };
  }

  close(): Promise<void> {
    return this.store.close();
  }
}
