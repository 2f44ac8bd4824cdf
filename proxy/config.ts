// The proxy's config file: YAML or JSON (JSON is parsed by the same YAML 1.2
// parser so that every problem can be pointed at FILE:LINE:COL), checked
// against the JSON schema (config/schema.ts), cross-checked and normalised
// (config/normalise.ts). Every problem is reported at once, one per line, in
// the form FILE:LINE:COL: KEY.PATH: WHAT IS WRONG (THE FIX) (config/messages.ts).
// `gatewire up` reads its `apps:` through this same parse.
import { readFile } from 'node:fs/promises';
import { LineCounter, type Node, parseDocument } from 'yaml';
import { ajvMessage, ConfigError, pointerToSegs, Problems, show } from './config/messages.ts';
import { crossCheck, normalise } from './config/normalise.ts';
import { crossCheckEdge } from './config/edge.ts';
import { validateRoot } from './config/schema.ts';
import type {
  CompressConfig,
  ConnZoneConfig,
  LimitStoreConfig,
  RateZoneConfig,
  RouteLimitsConfig,
  StaticConfig,
  UpstreamQueueConfig,
} from './config/edge.ts';

export { normaliseAddress } from '../protocol/addresses.ts';
export { parseDuration, parseSize } from '../protocol/units.ts';
export { type ConfigProblem, ConfigError, didYouMean, editDistance, formatProblem } from './config/messages.ts';
export { BALANCE_VALUES, DEFAULTS, HTTP_METHODS, LOG_LEVELS, PROTOCOL_VALUES } from './config/schema.ts';

export interface ProxyConfig {
  /** Path it was loaded from ('<inline>' for parseConfig without file). */
  file: string;
  listen: { host: string; port: number; tls?: { cert: string; key: string }; http2: boolean };
  /** Default 127.0.0.1:9901; `admin: false` disables. */
  admin: { host: string; port: number } | null;
  /** Worker processes (NGINX's worker_processes): 1 = this process serves, no master; 'auto' = one per core. */
  workers: number | 'auto';
  /** CIDRs whose X-Forwarded-For is trusted (appended either way). */
  trust_proxy: boolean | string[];
  /** flush_interval: how long a log line may wait in the buffer (NGINX's access_log flush=). */
  log: { level: string; access: boolean; flush_interval_ms: number };
  limits: {
    max_header_size: number;
    header_timeout_ms: number;
    keepalive_timeout_ms: number;
    max_connections: number;
    body_timeout_ms: number;
    rate: Record<string, RateZoneConfig>;
    conn: Record<string, ConnZoneConfig>;
    store: LimitStoreConfig;
  };
  /** Response compression for every route that does not say otherwise; null = off (NGINX `gzip off`). */
  compress: CompressConfig | null;
  /** DNS servers used for `resolve: true` servers; empty = the system resolver (getaddrinfo: /etc/hosts, search domains). */
  resolver: ResolverConfig;
  routes: RouteConfig[];
  upstreams: Record<string, UpstreamConfig>;
  /** Local appservers `gatewire up` starts (the proxy itself does not use them). */
  apps: AppConfig[];
}

/** One local appserver of the `apps:` section. */
export interface AppConfig {
  name: string;
  app: string;
  listen: string[];
  workers?: number;
  env: Record<string, string>;
  args: string[];
}

export interface ResolverConfig {
  servers: string[];
  timeout_ms: number;
  /** Default for each upstream's resolve_interval. */
  interval_ms: number;
}

export interface RouteConfig {
  match: { host?: string; path_prefix: string };
  /** null: a static-only route. */
  upstream: string | null;
  strip_prefix: boolean;
  static: StaticConfig | null;
  /** The route's own compress, else the top-level one. */
  compress: CompressConfig | null;
  limits: RouteLimitsConfig;
  /** Tunnel HTTP Upgrade / extended CONNECT requests (default true). */
  upgrade: boolean;
}

export interface HealthCheckConfig {
  path: string;
  interval_ms: number;
  timeout_ms: number;
  rise: number;
  fall: number;
  expect_status?: number[];
}

export interface UpstreamConfig {
  name: string;
  protocol: 'gatewire' | 'uwsgi' | 'http';
  balance: 'round_robin' | 'least_conn' | 'ip_hash' | 'hash' | 'random_two';
  /** Required when balance: hash. */
  hash_key: { header?: string; cookie?: string; uri?: true } | null;
  servers: ServerConfig[];
  max_fails: number;
  fail_timeout_ms: number;
  health_check: HealthCheckConfig | null;
  connections_per_server: number;
  timeouts: { connect_ms: number; read_ms: number; send_ms: number; tunnel_idle_ms: number };
  retries: { tries: number; methods: string[] };
  /** Bytes. */
  max_body: number;
  /**
   * Bytes: a request body announced by Content-Length up to this size is read whole before it is
   * sent, so a try the server never processed can be replayed elsewhere (NGINX's
   * client_body_buffer_size); 0 streams every body.
   */
  body_buffer_size: number;
  /** DNS re-resolution period for resolve: true servers. */
  resolve_interval_ms: number;
  /** Copy of the top-level resolver settings, so that a pool can resolve on its own. */
  resolver: { servers: string[]; timeout_ms: number };
  /** Requests waiting for a server under its max_conns. */
  queue: UpstreamQueueConfig;
}

/** address forms: "host:port", "[::1]:port", "unix:/path.sock"; for http protocol also "http://host:port" (normalised to "host:port"). */
export interface ServerConfig {
  address: string;
  weight: number;
  backup: boolean;
  resolve: boolean;
  max_fails?: number;
  fail_timeout_ms?: number;
  /** Requests in flight to this server at most (NGINX `server ... max_conns=`); 0 = no limit. */
  max_conns?: number;
}

export function parseConfig(text: string, file = '<inline>'): ProxyConfig {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((e) => {
        const pos = lc.linePos(e.pos[0]);
        return { file, line: pos.line, column: pos.col, keyPath: '', message: `syntax error: ${e.message.split('\n')[0]}` };
      }),
    );
  }
  const data = doc.toJS({ maxAliasCount: 100 }) as unknown;
  const root = doc.contents as Node | null;
  const problems = new Problems(file, root, lc);
  if (data === null || data === undefined || typeof data !== 'object' || Array.isArray(data)) {
    problems.add([], `the file must be a mapping of settings (listen, admin, routes, upstreams, ...), got ${data === null || data === undefined ? 'an empty document' : show(data)}`);
    throw new ConfigError(problems.sorted());
  }

  if (!validateRoot(data)) {
    for (const err of validateRoot.errors ?? []) {
      if (err.keyword === 'pattern' && err.propertyName !== undefined) {
        problems.add(pointerToSegs(err.instancePath).concat(err.propertyName), 'an upstream name may only use letters, digits, "_", "-" and "."', true);
        continue;
      }
      const m = ajvMessage(err, data);
      if (m) problems.add(m.segs, m.message, m.atKey);
    }
  }
  const raw = data as Record<string, any>;
  crossCheck(raw, problems);
  crossCheckEdge(raw, problems);
  if (problems.list.length > 0) throw new ConfigError(problems.sorted());
  return normalise(raw, file);
}

export async function loadConfig(file: string): Promise<ProxyConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'permission denied' : e.code === 'EISDIR' ? 'is a directory' : e.message;
    throw new ConfigError([{ file, keyPath: '', message: `cannot read the config file: ${why}` }]);
  }
  return parseConfig(text, file);
}


/** A documented sample config: README quotes it and the tests parse it. */
export const DEFAULT_CONFIG_EXAMPLE = `# gatewire proxy config (YAML; JSON works too). Durations: 500ms, 10s, 2m, 1h (a bare number is seconds).
# Sizes: 512k, 10mb, 1g (a bare number is bytes; k = 1024).
listen: { host: 127.0.0.1, port: 8080 }   # optional: tls: { cert: FILE, key: FILE }, http2: true
admin: { host: 127.0.0.1, port: 9901 }    # GET /metrics, /status, /healthz; admin: false disables
trust_proxy: false                        # or a list of CIDRs whose X-Forwarded-For is trusted
workers: 1                                # worker processes under one master; auto = one per core
log: { level: info, access: true, flush_interval: 1s }   # lines are buffered; flushed on SIGHUP and on stop
limits: { max_header_size: 16k, header_timeout: 60s, body_timeout: 60s, keepalive_timeout: 75s, max_connections: 0 }
resolver: { interval: 5s, timeout: 2s }   # servers: ["127.0.0.1:53"]; none = the system resolver
routes:
  - match: { host: api.example.com, path_prefix: /v1 }
    upstream: api
    strip_prefix: false
    upgrade: true               # tunnel WebSocket / HTTP Upgrade (false: forward without Upgrade)
  - match: { path_prefix: / }
    upstream: web
upstreams:
  api:
    protocol: gatewire          # gatewire | uwsgi | http
    balance: least_conn         # round_robin | least_conn | ip_hash | hash | random_two
    servers:
      - { address: "unix:/run/gatewire/api.sock", weight: 3 }
      - { address: "appserver:9000", resolve: true }   # every A/AAAA record is a server, re-resolved
      - { address: "10.0.0.9:9000", backup: true }     # only used when no primary is available
    max_fails: 3
    fail_timeout: 10s
    health_check: { path: /healthz, interval: 5s, timeout: 1s, rise: 2, fall: 3 }
    connections_per_server: 4
    timeouts: { connect: 2s, read: 60s, send: 60s, tunnel_idle: 1h }
    retries: { tries: 2, methods: [GET, HEAD, OPTIONS, PUT, DELETE] }
    max_body: 10mb
  web:
    protocol: http
    balance: hash
    hash_key: { cookie: session }
    servers:
      - { address: "http://127.0.0.1:8000" }
      - { address: "127.0.0.1:8001" }
`;
