// From a file that passed the schema to the ProxyConfig the proxy runs: the
// checks a schema cannot express (cross-references, duplicates, values that
// are well-formed but wrong), then normalisation (durations to *_ms, sizes to
// bytes, addresses to one spelling, defaults filled in).
import net from 'node:net';
import { normaliseAddress, validNameServer } from '../../protocol/addresses.ts';
import { validCidr } from '../../protocol/trusted-networks.ts';
import { parseDuration, parseSize } from '../../protocol/units.ts';
import type { AppConfig, ProxyConfig, ResolverConfig, ServerConfig, UpstreamConfig } from '../config.ts';
import { type Problems, show } from './messages.ts';
import { BALANCE_VALUES, DEFAULTS } from './schema.ts';
import path from 'node:path';
import { normaliseCompress, normaliseLimits, normaliseRouteLimits, normaliseStatic, normaliseUpstreamQueue } from './edge.ts';

const isObj = (v: unknown): v is Record<string, any> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Checks the schema cannot express; each runs only where the schema found the shape right. */
export function crossCheck(raw: Record<string, any>, problems: Problems): void {
  const upstreams = isObj(raw.upstreams) ? raw.upstreams : {};
  const names = Object.keys(upstreams);
  if (Array.isArray(raw.routes)) {
    raw.routes.forEach((route: unknown, i: number) => {
      if (!isObj(route) || typeof route.upstream !== 'string' || route.upstream === '') return;
      if (isObj(raw.upstreams) && !(route.upstream in upstreams)) {
        problems.add(['routes', i, 'upstream'], `${JSON.stringify(route.upstream)} is not defined in upstreams (defined: ${names.join(', ') || 'none'})`);
      }
    });
  }
  if (Array.isArray(raw.routes)) {
    const seen = new Map<string, number>();
    raw.routes.forEach((route: unknown, i: number) => {
      if (!isObj(route)) return;
      const m = isObj(route.match) ? route.match : {};
      if ((m.host !== undefined && typeof m.host !== 'string') || (m.path_prefix !== undefined && typeof m.path_prefix !== 'string')) return;
      const key = `${(m.host ?? '').toLowerCase()}\0${m.path_prefix ?? '/'}`;
      const first = seen.get(key);
      if (first === undefined) seen.set(key, i);
      else problems.add(['routes', i, 'match'], `same host and path_prefix as routes[${first}], so it would never match (remove it or change its match)`);
    });
  }
  for (const name of names) {
    const u = upstreams[name];
    if (!isObj(u)) continue;
    if (isObj(u.timeouts)) {
      for (const k of ['connect', 'read', 'send', 'tunnel_idle'] as const) {
        if (u.timeouts[k] !== undefined && parseDuration(u.timeouts[k]) === 0) problems.add(['upstreams', name, 'timeouts', k], 'must be more than 0 (e.g. "60s")');
      }
    }
    const protocol = typeof u.protocol === 'string' ? u.protocol : DEFAULTS.upstream.protocol;
    if (u.balance === 'hash' && u.hash_key === undefined) {
      problems.add(['upstreams', name, 'hash_key'], 'missing required key for balance: hash (add hash_key: { header: X-User-Id }, { cookie: session } or { uri: true })');
    }
    const balance = u.balance ?? DEFAULTS.upstream.balance;
    if (u.hash_key !== undefined && balance !== 'hash' && typeof balance === 'string' && (BALANCE_VALUES as readonly string[]).includes(balance)) {
      problems.add(['upstreams', name, 'hash_key'], `is only used with balance: hash, but balance is ${balance} (remove hash_key or set balance: hash)`, true);
    }
    if (u.servers === undefined) {
      problems.add(['upstreams', name, 'servers'], 'missing required key (add servers: [{ address: "127.0.0.1:9000" }])');
    } else if (Array.isArray(u.servers)) {
      if (u.servers.length === 0) problems.add(['upstreams', name, 'servers'], 'no servers (add at least one, e.g. - { address: "127.0.0.1:9000" })');
      u.servers.forEach((s: unknown, i: number) => {
        if (!isObj(s)) return;
        if (Number.isInteger(s.weight) && s.weight < 1) {
          problems.add(['upstreams', name, 'servers', i, 'weight'], `must be at least 1, got ${s.weight} (weights are relative shares; to keep a server idle until the others are down use backup: true)`);
        }
        if (typeof s.address === 'string' && s.address !== '') {
          const a = normaliseAddress(s.address, protocol);
          if ('error' in a) problems.add(['upstreams', name, 'servers', i, 'address'], a.error);
          else if (s.resolve === true && (a.address.startsWith('unix:') || net.isIP(a.address.replace(/^\[|\]?:\d+$/g, '')))) {
            problems.add(['upstreams', name, 'servers', i, 'resolve'], `has no effect on ${JSON.stringify(s.address)}, which is not a DNS name (remove resolve: true)`, true);
          }
        }
      });
      if (u.servers.length > 0 && u.servers.every((s: any) => isObj(s) && s.backup === true)) {
        problems.add(['upstreams', name, 'servers'], 'every server is a backup (a backup only takes traffic when no primary is available; make at least one a primary)');
      }
    }
    if (isObj(u.health_check) && isObj(u.health_check) && u.health_check.interval !== undefined && u.health_check.timeout !== undefined) {
      const iv = parseDuration(u.health_check.interval);
      const to = parseDuration(u.health_check.timeout);
      if (iv === 0) problems.add(['upstreams', name, 'health_check', 'interval'], 'must be more than 0 (e.g. "5s")');
      if (to > iv && iv > 0) problems.add(['upstreams', name, 'health_check', 'timeout'], `${show(u.health_check.timeout)} is longer than interval ${show(u.health_check.interval)} (a probe must finish before the next one starts)`);
    }
    for (const [k, v] of [
      ['fail_timeout', u.fail_timeout],
      ['resolve_interval', u.resolve_interval],
    ] as const) {
      if (v !== undefined && parseDuration(v) === 0 && k === 'resolve_interval') problems.add(['upstreams', name, k], 'must be more than 0 (e.g. "5s")');
    }
  }
  if (isObj(raw.listen) || isObj(raw.admin) || raw.admin === undefined || raw.admin === true) {
    const listenPort = isObj(raw.listen) && Number.isInteger(raw.listen.port) ? raw.listen.port : DEFAULTS.listen.port;
    const adminOn = raw.admin !== false;
    const adminPort = isObj(raw.admin) && Number.isInteger(raw.admin.port) ? raw.admin.port : DEFAULTS.admin.port;
    const listenHost = isObj(raw.listen) && typeof raw.listen.host === 'string' ? raw.listen.host : DEFAULTS.listen.host;
    const adminHost = isObj(raw.admin) && typeof raw.admin.host === 'string' ? raw.admin.host : DEFAULTS.admin.host;
    const wildcard = (h: string) => h === '0.0.0.0' || h === '::' || h === '[::]';
    if (adminOn && listenPort !== 0 && listenPort === adminPort && (listenHost === adminHost || wildcard(listenHost) || wildcard(adminHost))) {
      const segs = isObj(raw.admin) && raw.admin.port !== undefined ? ['admin', 'port'] : ['listen', 'port'];
      const other = segs[0] === 'admin' ? 'listen.port' : 'admin.port';
      problems.add(segs, `${listenPort} is also ${other} (use a different port, or admin: false to disable the admin server)`);
    }
  }
  if (Array.isArray(raw.trust_proxy)) {
    raw.trust_proxy.forEach((c: unknown, i: number) => {
      if (typeof c === 'string' && !validCidr(c)) problems.add(['trust_proxy', i], `${JSON.stringify(c)} is not an IP address or CIDR (e.g. "10.0.0.0/8", "127.0.0.1")`);
    });
  }
  if (isObj(raw.resolver) && Array.isArray(raw.resolver.servers)) {
    raw.resolver.servers.forEach((s: unknown, i: number) => {
      if (typeof s === 'string' && s !== '' && !validNameServer(s))
        problems.add(['resolver', 'servers', i], `${JSON.stringify(s)} is not a name server address (use an IP, "127.0.0.1:5353" or "[::1]:5353")`);
    });
  }
  if (Array.isArray(raw.apps)) {
    const names = new Map<string, number>();
    raw.apps.forEach((a: unknown, i: number) => {
      if (!isObj(a)) return;
      const name = typeof a.name === 'string' ? a.name : `app${i}`;
      const first = names.get(name);
      if (first === undefined) names.set(name, i);
      else problems.add(['apps', i, 'name'], `"${name}" is already the name of apps[${first}] (give each app its own name)`);
    });
  }
  if (isObj(raw.limits) && raw.limits.max_header_size !== undefined) {
    const n = parseSize(raw.limits.max_header_size);
    if (n >= 0 && n < 1024) problems.add(['limits', 'max_header_size'], `${show(raw.limits.max_header_size)} is too small (at least 1k)`);
  }
}

export function normalise(raw: Record<string, any>, file: string): ProxyConfig {
  const listen = raw.listen ?? {};
  const limits = raw.limits ?? {};
  const log = raw.log ?? {};
  const res = raw.resolver ?? {};
  const resolver: ResolverConfig = {
    servers: res.servers ?? [],
    timeout_ms: parseDuration(res.timeout ?? DEFAULTS.resolver.timeout),
    interval_ms: parseDuration(res.interval ?? DEFAULTS.resolver.interval),
  };
  const upstreams: Record<string, UpstreamConfig> = {};
  for (const [name, u] of Object.entries<Record<string, any>>(raw.upstreams)) {
    const D = DEFAULTS.upstream;
    const protocol = u.protocol ?? D.protocol;
    const hc = u.health_check;
    const H = DEFAULTS.health_check;
    upstreams[name] = {
      name,
      protocol,
      balance: u.balance ?? D.balance,
      hash_key: u.hash_key ?? null,
      servers: (u.servers as Record<string, any>[]).map((s) => {
        const a = normaliseAddress(s.address, protocol) as { address: string };
        const out: ServerConfig = { address: a.address, weight: s.weight ?? 1, backup: s.backup ?? false, resolve: s.resolve ?? false };
        if (s.max_fails !== undefined) out.max_fails = s.max_fails;
        if (s.fail_timeout !== undefined) out.fail_timeout_ms = parseDuration(s.fail_timeout);
        if (s.max_conns !== undefined) out.max_conns = s.max_conns;
        return out;
      }),
      max_fails: u.max_fails ?? D.max_fails,
      fail_timeout_ms: parseDuration(u.fail_timeout ?? D.fail_timeout),
      health_check:
        hc === undefined || hc === false
          ? null
          : {
              path: (hc === true ? undefined : hc.path) ?? H.path,
              interval_ms: parseDuration((hc === true ? undefined : hc.interval) ?? H.interval),
              timeout_ms: parseDuration((hc === true ? undefined : hc.timeout) ?? H.timeout),
              rise: (hc === true ? undefined : hc.rise) ?? H.rise,
              fall: (hc === true ? undefined : hc.fall) ?? H.fall,
              ...(hc !== true && hc.expect_status ? { expect_status: hc.expect_status } : {}),
            },
      connections_per_server: u.connections_per_server ?? D.connections_per_server,
      timeouts: {
        connect_ms: parseDuration(u.timeouts?.connect ?? D.timeouts.connect),
        read_ms: parseDuration(u.timeouts?.read ?? D.timeouts.read),
        send_ms: parseDuration(u.timeouts?.send ?? D.timeouts.send),
        tunnel_idle_ms: parseDuration(u.timeouts?.tunnel_idle ?? D.timeouts.tunnel_idle),
      },
      retries: {
        tries: u.retries?.tries ?? D.retries.tries,
        methods: [...(u.retries?.methods ?? D.retries.methods)],
      },
      max_body: parseSize(u.max_body ?? D.max_body),
      body_buffer_size: parseSize(u.body_buffer_size ?? D.body_buffer_size),
      resolve_interval_ms: u.resolve_interval !== undefined ? parseDuration(u.resolve_interval) : resolver.interval_ms,
      resolver: { servers: [...resolver.servers], timeout_ms: resolver.timeout_ms },
      queue: normaliseUpstreamQueue(u.queue),
    };
  }
  const admin = raw.admin === false ? null : { host: raw.admin?.host ?? DEFAULTS.admin.host, port: raw.admin?.port ?? DEFAULTS.admin.port };
  return {
    file,
    listen: {
      host: listen.host ?? DEFAULTS.listen.host,
      port: listen.port ?? DEFAULTS.listen.port,
      ...(listen.tls ? { tls: { cert: listen.tls.cert, key: listen.tls.key } } : {}),
      http2: listen.http2 ?? false,
    },
    admin: raw.admin === true || raw.admin === undefined || typeof raw.admin === 'object' ? admin : null,
    workers: raw.workers ?? 1,
    trust_proxy: raw.trust_proxy ?? false,
    log: {
      level: log.level ?? DEFAULTS.log.level,
      access: log.access ?? DEFAULTS.log.access,
      flush_interval_ms: parseDuration(log.flush_interval ?? DEFAULTS.log.flush_interval),
    },
    limits: {
      max_header_size: parseSize(limits.max_header_size ?? DEFAULTS.limits.max_header_size),
      header_timeout_ms: parseDuration(limits.header_timeout ?? DEFAULTS.limits.header_timeout),
      keepalive_timeout_ms: parseDuration(limits.keepalive_timeout ?? DEFAULTS.limits.keepalive_timeout),
      max_connections: limits.max_connections ?? DEFAULTS.limits.max_connections,
      body_timeout_ms: parseDuration(limits.body_timeout ?? DEFAULTS.limits.body_timeout),
      ...normaliseLimits(limits),
    },
    compress: normaliseCompress(raw.compress),
    resolver,
    routes: (raw.routes as Record<string, any>[]).map((r) => ({
      match: { ...(r.match?.host !== undefined ? { host: r.match.host } : {}), path_prefix: r.match?.path_prefix ?? '/' },
      upstream: r.upstream ?? null,
      strip_prefix: r.strip_prefix ?? false,
      static: normaliseStatic(r.static, (dir) => path.resolve(file === '<inline>' ? process.cwd() : path.dirname(file), dir)),
      compress: normaliseCompress(r.compress === undefined ? raw.compress : r.compress),
      limits: normaliseRouteLimits(r.limits),
      upgrade: r.upgrade ?? true,
    })),
    upstreams,
    apps: ((raw.apps ?? []) as Record<string, any>[]).map(
      (a, i): AppConfig => ({
        name: a.name ?? `app${i}`,
        app: a.app,
        listen: typeof a.listen === 'string' ? [a.listen] : [...a.listen],
        ...(a.workers !== undefined ? { workers: a.workers } : {}),
        env: Object.fromEntries(Object.entries<unknown>(a.env ?? {}).map(([k, v]) => [k, v === null ? '' : String(v)])),
        args: ((a.args ?? []) as unknown[]).map(String),
      }),
    ),
  };
}

