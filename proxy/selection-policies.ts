// Load-balancing policies, each a small unit with NGINX's meaning. A policy sees
// the candidates already filtered to available hosts; the hash policies also get
// the stable list of all hosts of the tier, so that a server going down moves
// only its own keys (NGINX keeps the hash over all peers and re-hashes past the
// unavailable ones).
import { crc32 } from 'node:zlib';
import type { UpstreamConfig } from './config.ts';
import type { Host } from './hosts.ts';

export interface SelectionContext {
  clientIp: string;
  headers: Record<string, string | string[] | undefined>;
  url: string;
}

export interface SelectionPolicy {
  /** hosts = the candidates already filtered to available ones; all = every host of the tier (stable order), for the hash policies. */
  select(hosts: readonly Host[], ctx: SelectionContext, all?: readonly Host[]): Host | null;
}

/**
 * NGINX's smooth weighted round robin (ngx_http_upstream_get_peer): every pick adds
 * each candidate's weight to its current weight, takes the largest, and subtracts
 * the total from the winner. Weights 5,1,1 give a a b a c a a.
 */
export class RoundRobin implements SelectionPolicy {
  private readonly current = new WeakMap<Host, number>();

  select(hosts: readonly Host[], _ctx?: SelectionContext): Host | null {
    if (hosts.length === 0) return null;
    if (hosts.length === 1) return hosts[0];
    let total = 0;
    let best: Host | null = null;
    let bestWeight = 0;
    for (const h of hosts) {
      const cw = (this.current.get(h) ?? 0) + h.weight;
      this.current.set(h, cw);
      total += h.weight;
      if (best === null || cw > bestWeight) {
        best = h;
        bestWeight = cw;
      }
    }
    this.current.set(best!, bestWeight - total);
    return best;
  }
}

/**
 * NGINX's least_conn: the fewest in-flight requests relative to weight
 * (conns_a * weight_b < conns_b * weight_a); ties go to smooth weighted round robin
 * among the tied hosts.
 */
export class LeastConnections implements SelectionPolicy {
  private readonly rr = new RoundRobin();

  select(hosts: readonly Host[], _ctx?: SelectionContext): Host | null {
    if (hosts.length === 0) return null;
    let best = hosts[0];
    let tied: Host[] = [best];
    for (let i = 1; i < hosts.length; i++) {
      const h = hosts[i];
      const lhs = h.inflight * best.weight;
      const rhs = best.inflight * h.weight;
      if (lhs < rhs) {
        best = h;
        tied = [h];
      } else if (lhs === rhs) tied.push(h);
    }
    return tied.length === 1 ? best : this.rr.select(tied);
  }
}

/** Bytes NGINX's ip_hash hashes: the first 3 octets of IPv4 (a /24 sticks together), all 16 of IPv6. */
export function ipHashBytes(ip: string): number[] {
  const v4 = /^(?:::ffff:)?(\d+)\.(\d+)\.(\d+)\.(\d+)$/i.exec(ip);
  if (v4) return [Number(v4[1]), Number(v4[2]), Number(v4[3])];
  return ipv6Bytes(ip);
}

function ipv6Bytes(ip: string): number[] {
  const clean = ip.replace(/^\[|\]$/g, '').replace(/%.*$/, '');
  const [head, tail] = clean.includes('::') ? clean.split('::') : [clean, undefined];
  const groupsOf = (s: string | undefined): number[] => {
    if (!s) return [];
    const out: number[] = [];
    for (const part of s.split(':')) {
      if (part.includes('.')) {
        const o = part.split('.').map(Number);
        out.push((o[0] << 8) | o[1], (o[2] << 8) | o[3]);
      } else out.push(Number.parseInt(part, 16) || 0);
    }
    return out;
  };
  const h = groupsOf(head);
  const t = groupsOf(tail);
  const groups = tail === undefined ? h : [...h, ...new Array(Math.max(0, 8 - h.length - t.length)).fill(0), ...t];
  const bytes: number[] = [];
  for (let i = 0; i < 8; i++) bytes.push(((groups[i] ?? 0) >> 8) & 0xff, (groups[i] ?? 0) & 0xff);
  return bytes;
}

/**
 * NGINX's ip_hash (ngx_http_upstream_get_ip_hash_peer): hash = (hash * 113 + byte) % 6271
 * over the address bytes, starting from 89; the weighted slot w = hash % total weight
 * picks the server over the stable list. An unavailable pick re-hashes (the hash keeps
 * accumulating), and after 20 tries it falls back to round robin.
 */
export class IpHash implements SelectionPolicy {
  private readonly rr = new RoundRobin();

  select(hosts: readonly Host[], ctx: SelectionContext, all: readonly Host[] = hosts): Host | null {
    if (hosts.length === 0) return null;
    const candidates = new Set(hosts);
    const bytes = ipHashBytes(ctx.clientIp);
    let total = 0;
    for (const h of all) total += h.weight;
    let hash = 89;
    for (let tries = 0; tries < 20; tries++) {
      for (const b of bytes) hash = (hash * 113 + b) % 6271;
      let w = hash % total;
      let i = 0;
      while (w >= all[i].weight) {
        w -= all[i].weight;
        i++;
      }
      if (candidates.has(all[i])) return all[i];
    }
    return this.rr.select(hosts);
  }
}

/** The request's hash key per hash_key, or undefined when the request does not carry it. */
export function hashKeyOf(key: UpstreamConfig['hash_key'], ctx: SelectionContext): string | undefined {
  if (!key) return undefined;
  if (key.uri) return ctx.url;
  if (key.header) {
    const v = ctx.headers[key.header.toLowerCase()];
    if (v === undefined) return undefined;
    return Array.isArray(v) ? v.join(', ') : v;
  }
  if (key.cookie) {
    const raw = ctx.headers.cookie;
    const text = Array.isArray(raw) ? raw.join('; ') : raw;
    if (!text) return undefined;
    for (const part of text.split(';')) {
      const eq = part.indexOf('=');
      if (eq < 0) continue;
      if (part.slice(0, eq).trim() === key.cookie) return part.slice(eq + 1).trim();
    }
  }
  return undefined;
}

interface Ring {
  points: Uint32Array; // sorted hash points
  owners: Host[]; // owner of points[i]
}

const POINTS_PER_WEIGHT = 160;

/**
 * NGINX's `hash KEY consistent` (ketama): every server puts 160 × weight points on a
 * crc32 ring (crc32 of its address, then chained like NGINX: crc32(base_hash ‖ prev_hash));
 * a key goes to the first point at or after crc32(key), walking on past unavailable
 * servers. Adding one server to N moves about 1/(N+1) of the keys; removing one moves
 * only its own keys. Points are placed by address, so a re-resolved host keeps its keys.
 * A request without the key (no such header/cookie) goes round robin rather than all
 * piling onto one server as NGINX's empty key would.
 */
export class ConsistentHash implements SelectionPolicy {
  private readonly rr = new RoundRobin();
  private ring: Ring | null = null;
  private ringOf: readonly Host[] | null = null;
  private ringSignature = '';

  private readonly key: UpstreamConfig['hash_key'];
  constructor(key: UpstreamConfig['hash_key']) {
    this.key = key;
  }

  select(hosts: readonly Host[], ctx: SelectionContext, all: readonly Host[] = hosts): Host | null {
    if (hosts.length === 0) return null;
    const k = hashKeyOf(this.key, ctx);
    if (k === undefined) return this.rr.select(hosts);
    return this.lookup(k, hosts, all);
  }

  /** The host for a key: exposed for tests and for /status. */
  lookup(key: string, hosts: readonly Host[], all: readonly Host[] = hosts): Host | null {
    if (hosts.length === 0) return null;
    const ring = this.ringFor(all);
    const h = crc32(key) >>> 0;
    const { points, owners } = ring;
    // First point >= h (binary search), wrapping around.
    let lo = 0;
    let hi = points.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (points[mid] < h) lo = mid + 1;
      else hi = mid;
    }
    const candidates = hosts.length === all.length ? null : new Set(hosts);
    for (let n = 0; n < points.length; n++) {
      const owner = owners[(lo + n) % points.length];
      if (candidates === null || candidates.has(owner)) return owner;
    }
    return this.rr.select(hosts);
  }

  private ringFor(all: readonly Host[]): Ring {
    if (this.ring && this.ringOf === all) return this.ring;
    const signature = all.map((h) => `${h.address}*${h.weight}`).join(',');
    if (this.ring && signature === this.ringSignature) {
      this.ringOf = all;
      return this.ring;
    }
    const entries: Array<[number, Host]> = [];
    const buf = Buffer.alloc(8);
    for (const host of all) {
      const base = crc32(host.address) >>> 0;
      let prev = 0;
      for (let j = 0; j < POINTS_PER_WEIGHT * host.weight; j++) {
        buf.writeUInt32LE(base, 0);
        buf.writeUInt32LE(prev, 4);
        prev = crc32(buf) >>> 0;
        entries.push([prev, host]);
      }
    }
    // Ties on a point: order by address so the ring does not depend on list order.
    entries.sort((a, b) => a[0] - b[0] || (a[1].address < b[1].address ? -1 : a[1].address > b[1].address ? 1 : 0));
    this.ring = { points: Uint32Array.from(entries, (e) => e[0]), owners: entries.map((e) => e[1]) };
    this.ringOf = all;
    this.ringSignature = signature;
    return this.ring;
  }
}

/**
 * NGINX's `random two least_conn`: two distinct hosts drawn at random (weighted), the
 * one with fewer in-flight requests relative to weight wins (the first drawn on a tie).
 */
export class RandomTwo implements SelectionPolicy {
  private readonly random: () => number;
  constructor(random: () => number = Math.random) {
    this.random = random;
  }

  select(hosts: readonly Host[], _ctx?: SelectionContext): Host | null {
    if (hosts.length === 0) return null;
    if (hosts.length === 1) return hosts[0];
    let total = 0;
    for (const h of hosts) total += h.weight;
    const a = this.pick(hosts, total, null);
    const b = this.pick(hosts, total - a.weight, a);
    return b.inflight * a.weight < a.inflight * b.weight ? b : a;
  }

  private pick(hosts: readonly Host[], total: number, skip: Host | null): Host {
    let w = this.random() * total;
    let last = hosts[0];
    for (const h of hosts) {
      if (h === skip) continue;
      last = h;
      if (w < h.weight) return h;
      w -= h.weight;
    }
    return last;
  }
}

export function createPolicy(cfg: Pick<UpstreamConfig, 'balance' | 'hash_key'>, random?: () => number): SelectionPolicy {
  switch (cfg.balance) {
    case 'round_robin':
      return new RoundRobin();
    case 'least_conn':
      return new LeastConnections();
    case 'ip_hash':
      return new IpHash();
    case 'hash':
      return new ConsistentHash(cfg.hash_key);
    case 'random_two':
      return new RandomTwo(random);
    default:
      throw new Error(`unknown balance policy: ${String(cfg.balance)}`);
  }
}
