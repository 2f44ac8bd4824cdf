// The proxy's config file: YAML or JSON (JSON is parsed by the same YAML 1.2
// parser so that every problem can be pointed at FILE:LINE:COL), checked
// against a JSON schema with ajv, cross-checked, then normalised (durations to
// *_ms, sizes to bytes, defaults filled in like NGINX's).
//
// Every problem is reported, one per line, in the form
//   FILE:LINE:COL: KEY.PATH: WHAT IS WRONG (THE FIX)
// because a config that fails on its first error only makes users iterate.
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import { Ajv, type ErrorObject } from 'ajv';
import { isMap, isScalar, isSeq, LineCounter, type Node, parseDocument } from 'yaml';

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
  log: { level: string; access: boolean };
  limits: { max_header_size: number; header_timeout_ms: number; keepalive_timeout_ms: number; max_connections: number };
  /** DNS servers used for `resolve: true` servers; empty = the system resolver (getaddrinfo: /etc/hosts, search domains). */
  resolver: ResolverConfig;
  routes: RouteConfig[];
  upstreams: Record<string, UpstreamConfig>;
}

export interface ResolverConfig {
  servers: string[];
  timeout_ms: number;
  /** Default for each upstream's resolve_interval. */
  interval_ms: number;
}

export interface RouteConfig {
  match: { host?: string; path_prefix: string };
  upstream: string;
  strip_prefix: boolean;
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
  timeouts: { connect_ms: number; read_ms: number; send_ms: number };
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
}

/** address forms: "host:port", "[::1]:port", "unix:/path.sock"; for http protocol also "http://host:port" (normalised to "host:port"). */
export interface ServerConfig {
  address: string;
  weight: number;
  backup: boolean;
  resolve: boolean;
  max_fails?: number;
  fail_timeout_ms?: number;
}

export interface ConfigProblem {
  file: string;
  line?: number;
  column?: number;
  keyPath: string;
  message: string;
}

export class ConfigError extends Error {
  readonly code = 'GW_CONFIG_INVALID';
  readonly file: string;
  readonly line?: number;
  readonly column?: number;
  /** Key path of the first problem. */
  readonly keyPath: string;
  readonly problems: ConfigProblem[];
  constructor(problems: ConfigProblem[]) {
    super(problems.map(formatProblem).join('\n'));
    this.name = 'ConfigError';
    this.problems = problems;
    const first = problems[0];
    this.file = first.file;
    this.line = first.line;
    this.column = first.column;
    this.keyPath = first.keyPath;
  }
}

export function formatProblem(p: ConfigProblem): string {
  const where = p.line === undefined ? p.file : `${p.file}:${p.line}:${p.column}`;
  return p.keyPath ? `${where}: ${p.keyPath}: ${p.message}` : `${where}: ${p.message}`;
}

// ---------------------------------------------------------------------------
// Defaults. NGINX's where one exists; the config reference (docs/config-reference.md) says why where we differ.

export const DEFAULTS = {
  listen: { host: '0.0.0.0', port: 8080 },
  admin: { host: '127.0.0.1', port: 9901 },
  log: { level: 'info', access: true },
  limits: {
    max_header_size: 16 * 1024, // Node's --max-http-header-size default
    header_timeout: '60s', // client_header_timeout 60s
    keepalive_timeout: '75s', // keepalive_timeout 75s
    max_connections: 0, // 0 = no limit
  },
  resolver: { timeout: '2s', interval: '5s' },
  upstream: {
    protocol: 'gatewire',
    balance: 'round_robin',
    max_fails: 1,
    fail_timeout: '10s',
    connections_per_server: 4,
    // proxy_connect_timeout is 60s in NGINX; a loopback/LAN app server that does not
    // accept within 2s is down, and 60s of waiting per try only piles up clients.
    timeouts: { connect: '2s', read: '60s', send: '60s' },
    retries: { tries: 2, methods: ['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE'] },
    max_body: '1mb', // client_max_body_size 1m
    body_buffer_size: '64k', // client_body_buffer_size 16k (8k on 32-bit); 64k covers typical forms and JSON
  },
  health_check: { path: '/healthz', interval: '5s', timeout: '1s', rise: 2, fall: 3 },
} as const;

export const BALANCE_VALUES = ['round_robin', 'least_conn', 'ip_hash', 'hash', 'random_two'] as const;
export const PROTOCOL_VALUES = ['gatewire', 'uwsgi', 'http'] as const;
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export const HTTP_METHODS = ['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'POST', 'PATCH', 'TRACE', 'CONNECT'] as const;

// ---------------------------------------------------------------------------
// Duration and size parsing.

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const DURATION_RE = /^\s*(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h|d)\s*)+$|^\s*\d+(?:\.\d+)?\s*$/;
const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1024, m: 1024 ** 2, mb: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3 };
const SIZE_RE = /^\s*\d+(?:\.\d+)?\s*(?:b|k|kb|m|mb|g|gb)?\s*$/i;

/** "500ms", "10s", "2m", "1h", "1m30s", 10 (= seconds) → milliseconds; NaN when malformed. */
export function parseDuration(v: string | number): number {
  if (typeof v === 'number') return v >= 0 ? Math.round(v * 1000) : Number.NaN;
  if (!DURATION_RE.test(v)) return Number.NaN;
  const s = v.trim();
  if (/^\d+(?:\.\d+)?$/.test(s)) return Math.round(Number(s) * 1000);
  let ms = 0;
  for (const m of s.matchAll(/(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)/g)) ms += Number(m[1]) * DURATION_UNITS[m[2]];
  return Math.round(ms);
}

/** "512k", "10mb", "1g", 1024 (= bytes) → bytes (k = 1024, like NGINX); NaN when malformed. */
export function parseSize(v: string | number): number {
  if (typeof v === 'number') return v >= 0 ? Math.floor(v) : Number.NaN;
  if (!SIZE_RE.test(v)) return Number.NaN;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(v)!;
  return Math.floor(Number(m[1]) * SIZE_UNITS[m[2].toLowerCase()]);
}

// ---------------------------------------------------------------------------
// Schema. `x-kind` marks values whose messages need more than ajv's words.

type Schema = Record<string, unknown>;
const duration = (): Schema => ({ type: ['number', 'string'], minimum: 0, pattern: DURATION_RE.source, 'x-kind': 'duration' });
const size = (): Schema => ({ type: ['number', 'string'], minimum: 0, pattern: SIZE_RE.source, 'x-kind': 'size' });
const int = (minimum: number, maximum?: number): Schema => ({ type: 'integer', minimum, ...(maximum === undefined ? {} : { maximum }) });
const str = (): Schema => ({ type: 'string', minLength: 1 });
const bool = (): Schema => ({ type: 'boolean' });
const obj = (properties: Record<string, Schema>, required: string[] = []): Schema => ({
  type: 'object',
  properties,
  required,
  additionalProperties: false,
});

const SERVER_SCHEMA = obj(
  {
    address: str(),
    // The minimum for weight is checked by hand so that the message can say what a weight is.
    weight: { type: 'integer' },
    backup: bool(),
    resolve: bool(),
    max_fails: int(0),
    fail_timeout: duration(),
  },
  ['address'],
);

const HEALTH_CHECK_SCHEMA: Schema = {
  type: ['object', 'boolean'],
  properties: {
    path: { type: 'string', pattern: '^/', 'x-kind': 'path' },
    interval: duration(),
    timeout: duration(),
    rise: int(1),
    fall: int(1),
    expect_status: { type: 'array', items: int(100, 599), minItems: 1 },
  },
  additionalProperties: false,
};

const UPSTREAM_SCHEMA = obj({
  protocol: { enum: [...PROTOCOL_VALUES] },
  balance: { enum: [...BALANCE_VALUES] },
  hash_key: {
    type: 'object',
    properties: { header: str(), cookie: str(), uri: { const: true } },
    additionalProperties: false,
    minProperties: 1,
    maxProperties: 1,
  },
  // Emptiness is checked by hand ("no servers").
  servers: { type: 'array', items: SERVER_SCHEMA },
  max_fails: int(0),
  fail_timeout: duration(),
  health_check: HEALTH_CHECK_SCHEMA,
  connections_per_server: int(1, 1024),
  timeouts: obj({ connect: duration(), read: duration(), send: duration() }),
  retries: obj({ tries: int(1, 20), methods: { type: 'array', items: { enum: [...HTTP_METHODS] } } }),
  max_body: size(),
  body_buffer_size: size(),
  resolve_interval: duration(),
});

const ROOT_SCHEMA = obj(
  {
    listen: obj({
      host: str(),
      port: int(0, 65535),
      tls: obj({ cert: str(), key: str() }, ['cert', 'key']),
      http2: bool(),
    }),
    admin: {
      type: ['object', 'boolean'],
      properties: { host: str(), port: int(0, 65535) },
      additionalProperties: false,
    },
    trust_proxy: { type: ['boolean', 'array'], items: { type: 'string', 'x-kind': 'cidr' } },
    workers: { type: ['integer', 'string'], minimum: 1, pattern: '^auto$', 'x-kind': 'workers' },
    log: obj({ level: { enum: [...LOG_LEVELS] }, access: bool() }),
    limits: obj({
      max_header_size: size(),
      header_timeout: duration(),
      keepalive_timeout: duration(),
      max_connections: int(0),
    }),
    resolver: obj({ servers: { type: 'array', items: str() }, timeout: duration(), interval: duration() }),
    routes: {
      type: 'array',
      minItems: 1,
      items: obj(
        {
          match: obj({ host: str(), path_prefix: { type: 'string', pattern: '^/', 'x-kind': 'path' } }),
          upstream: str(),
          strip_prefix: bool(),
        },
        ['upstream'],
      ),
    },
    // Local appservers for `gatewire up`; cli/up.ts validates them, the proxy ignores them.
    apps: {},
    upstreams: {
      type: 'object',
      minProperties: 1,
      propertyNames: { pattern: '^[A-Za-z0-9_.-]+$' },
      additionalProperties: UPSTREAM_SCHEMA,
    },
  },
  ['routes', 'upstreams'],
);

const ajv = new Ajv({ allErrors: true, verbose: true, strict: false });
const validateRoot = ajv.compile(ROOT_SCHEMA);

// ---------------------------------------------------------------------------
// Messages.

/** Edit distance (Levenshtein with adjacent transpositions, so "POTS" is one edit from "POST"); used only for "did you mean". */
export function editDistance(a: string, b: string): number {
  const rows: number[][] = [];
  for (let i = 0; i <= a.length; i++) {
    rows.push(new Array<number>(b.length + 1).fill(0));
    rows[i][0] = i;
  }
  for (let j = 0; j <= b.length; j++) rows[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min(rows[i - 1][j] + 1, rows[i][j - 1] + 1, rows[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, rows[i - 2][j - 2] + 1);
      rows[i][j] = d;
    }
  }
  return rows[a.length][b.length];
}

/** The closest candidate when it is close enough to be a typo (case, separators, a few letters). */
export function didYouMean(value: string, candidates: readonly string[]): string | undefined {
  const norm = (s: string) => s.toLowerCase().replace(/[-_ ]/g, '');
  let best: string | undefined;
  let bestD = Number.POSITIVE_INFINITY;
  for (const c of candidates) {
    const d = norm(c) === norm(value) ? 0 : editDistance(value.toLowerCase(), c.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  // Short words are one edit from many others: "foo" must not suggest "log".
  const limit = Math.max(1, Math.floor(value.length / 3));
  return bestD <= limit ? best : undefined;
}

function show(v: unknown): string {
  if (v === null || v === undefined) return 'nothing';
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return String(v);
}

const TYPE_WORDS: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  integer: 'a whole number',
  boolean: 'true or false',
  object: 'a mapping',
  array: 'a list',
};

function expectedTypeWords(types: string | string[], kind: unknown): string {
  if (kind === 'duration') return 'a number of seconds or a duration like "10s"';
  if (kind === 'size') return 'a number of bytes or a size like "10mb"';
  if (kind === 'workers') return 'a number of worker processes (1 or more) or "auto" (one per core)';
  const list = (Array.isArray(types) ? types : [types]).map((t) => TYPE_WORDS[t] ?? t);
  return list.length === 1 ? list[0] : `${list.slice(0, -1).join(', ')} or ${list[list.length - 1]}`;
}

const MISSING_FIX: Record<string, string> = {
  routes: 'add routes: [{ match: { path_prefix: / }, upstream: NAME }]',
  upstreams: 'add upstreams: { NAME: { servers: [{ address: "127.0.0.1:9000" }] } }',
  upstream: 'name one of the upstreams',
  address: 'add address: "host:port" or "unix:/path.sock"',
  cert: 'add the path of the PEM certificate chain',
  key: 'add the path of the PEM private key',
};

type Seg = string | number;

function keyPath(segs: readonly Seg[]): string {
  let out = '';
  for (const s of segs) out += typeof s === 'number' ? `[${s}]` : out ? `.${s}` : s;
  return out;
}

function pointerToSegs(pointer: string): Seg[] {
  if (!pointer) return [];
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
}

function getAt(data: unknown, segs: readonly Seg[]): unknown {
  let cur: any = data;
  for (const s of segs) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = cur[s];
  }
  return cur;
}

/** Messages for one ajv error; null when another error at the same spot says it better. */
function ajvMessage(err: ErrorObject, data: unknown): { segs: Seg[]; message: string; atKey?: boolean } | null {
  const segs = pointerToSegs(err.instancePath);
  const value = err.data;
  const parent = err.parentSchema as Schema | undefined;
  const kind = parent?.['x-kind'];
  switch (err.keyword) {
    case 'additionalProperties': {
      const key = (err.params as { additionalProperty: string }).additionalProperty;
      const allowed = Object.keys((err.parentSchema as Schema)?.properties ?? {});
      const guess = didYouMean(key, allowed);
      return {
        segs: [...segs, key],
        atKey: true,
        message: guess ? `unknown key (did you mean "${guess}"?)` : `unknown key (allowed: ${allowed.join(', ')})`,
      };
    }
    case 'enum': {
      const allowed = (err.params as { allowedValues: unknown[] }).allowedValues.map(String);
      const guess = typeof value === 'string' ? didYouMean(value, allowed) : undefined;
      return {
        segs,
        message: `${show(value)} is not one of ${allowed.join(', ')}${guess ? ` (did you mean "${guess}"?)` : ''}`,
      };
    }
    case 'const':
      return { segs, message: `expected true, got ${show(value)} (write uri: true to hash on the request URI)` };
    case 'type': {
      // An upstream name given a list or scalar instead of a mapping, etc.
      return { segs, message: `expected ${expectedTypeWords((err.params as { type: string | string[] }).type, kind)}, got ${show(value)}` };
    }
    case 'pattern': {
      if (kind === 'duration' || kind === 'size' || kind === 'workers') return { segs, message: `expected ${expectedTypeWords('', kind)}, got ${show(value)}` };
      if (kind === 'path') return { segs, message: `${show(value)} must start with "/" (write "/${String(value).replace(/^\/*/, '')}")` };
      if (err.keyword === 'pattern' && err.propertyName !== undefined) return null;
      return { segs, message: `${show(value)} has an unexpected form` };
    }
    case 'propertyNames':
      return null; // reported by the pattern error on the name itself
    case 'minimum':
    case 'maximum': {
      const limit = (err.params as { limit: number }).limit;
      if (kind === 'duration' || kind === 'size') return { segs, message: `must not be negative, got ${show(value)}` };
      return { segs, message: `must be ${err.keyword === 'minimum' ? 'at least' : 'at most'} ${limit}, got ${show(value)}` };
    }
    case 'minLength':
      return { segs, message: 'must not be empty' };
    case 'required': {
      const missing = (err.params as { missingProperty: string }).missingProperty;
      const fix = MISSING_FIX[missing];
      return { segs: [...segs, missing], message: `missing required key${fix ? ` (${fix})` : ''}` };
    }
    case 'minItems':
      if (segs[segs.length - 1] === 'routes') return { segs, message: 'no routes (add at least one, e.g. - { match: { path_prefix: / }, upstream: NAME })' };
      return { segs, message: 'must not be empty' };
    case 'minProperties':
      if (segs.length === 1 && segs[0] === 'upstreams') return { segs, message: 'no upstreams (define at least one, e.g. web: { servers: [{ address: "127.0.0.1:9000" }] })' };
      return { segs, message: 'must name exactly one of header, cookie, uri (e.g. { header: X-User-Id })' };
    case 'maxProperties':
      return { segs, message: `must name exactly one of header, cookie, uri, got ${Object.keys(getAt(data, segs) as object).join(', ')}` };
    default:
      return { segs, message: err.message ?? 'is invalid' };
  }
}

// ---------------------------------------------------------------------------
// Positions: key path → the node in the YAML document.

function findNode(root: Node | null | undefined, segs: readonly Seg[]): { node: Node | null; keyNode: Node | null; found: boolean } {
  let node: Node | null = root ?? null;
  let keyNode: Node | null = null;
  for (const s of segs) {
    if (isMap(node)) {
      const pair = node.items.find((p) => (isScalar(p.key) ? String(p.key.value) : String(p.key)) === String(s));
      if (!pair) return { node, keyNode, found: false };
      keyNode = (pair.key as Node) ?? null;
      node = (pair.value as Node) ?? keyNode;
    } else if (isSeq(node) && typeof s === 'number' && s < node.items.length) {
      keyNode = null;
      node = node.items[s] as Node;
    } else {
      return { node, keyNode, found: false };
    }
  }
  return { node, keyNode, found: true };
}

class Problems {
  readonly list: ConfigProblem[] = [];
  private readonly seen = new Set<string>();
  private readonly file: string;
  private readonly root: Node | null | undefined;
  private readonly lc: LineCounter;
  constructor(
    file: string,
    root: Node | null | undefined,
    lc: LineCounter,
  ) {
    this.file = file;
    this.root = root;
    this.lc = lc;
  }

  /** atKey: point at the key itself (unknown keys) rather than its value. */
  add(segs: readonly Seg[], message: string, atKey = false): void {
    const path = keyPath(segs);
    const dedupe = `${path}\0${message}`;
    if (this.seen.has(dedupe)) return;
    this.seen.add(dedupe);
    const { node, keyNode, found } = findNode(this.root, segs);
    // A missing key is pointed at its parent's key ("api:"), the line a user adds it under.
    const target = found ? (atKey ? (keyNode ?? node) : (node ?? keyNode)) : (keyNode ?? node);
    const offset = target?.range?.[0] ?? 0;
    const pos = this.lc.linePos(offset);
    this.list.push({ file: this.file, line: pos.line, column: pos.col, keyPath: path, message });
  }

  /** Problems in file order, like a compiler's. */
  sorted(): ConfigProblem[] {
    return [...this.list].sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.column ?? 0) - (b.column ?? 0));
  }
}

// ---------------------------------------------------------------------------
// Addresses.

/** "host:port", "[v6]:port", "unix:/abs/path" (and "http://host:port" for http) → normalised form, or an error text. */
export function normaliseAddress(address: string, protocol: string): { address: string } | { error: string } {
  const bad = {
    error: `${JSON.stringify(address)} is not a valid address (use "host:port", "[::1]:port" or "unix:/path.sock"${protocol === 'http' ? ' or "http://host:port"' : ''})`,
  };
  if (address.startsWith('unix:')) {
    const p = address.slice(5);
    if (!p.startsWith('/') || p.length < 2) return { error: `${JSON.stringify(address)} is not a valid address (a Unix socket needs an absolute path: "unix:/path.sock")` };
    return { address: `unix:${p}` };
  }
  let rest = address;
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(address);
  if (scheme) {
    if (scheme[1].toLowerCase() !== 'http' || protocol !== 'http')
      return {
        error: `${JSON.stringify(address)} is not a valid address (${scheme[1].toLowerCase() === 'http' ? `a URL is only accepted with protocol: http; write "${address.slice(scheme[0].length).replace(/\/.*$/, '')}"` : 'only http:// URLs are accepted'})`,
      };
    rest = address.slice(scheme[0].length).replace(/\/$/, '');
    if (rest.includes('/')) return { error: `${JSON.stringify(address)} is not a valid address (a server address has no path; write "http://${rest.replace(/\/.*$/, '')}")` };
  }
  let host: string;
  let portText: string;
  const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(rest);
  if (v6) {
    host = v6[1];
    portText = v6[2];
    if (net.isIPv6(host) === false) return bad;
  } else {
    const i = rest.lastIndexOf(':');
    if (i <= 0) {
      if (/^[^:]+$/.test(rest) && rest.length > 0) return { error: `${JSON.stringify(address)} has no port (write "${rest}:PORT")` };
      return bad;
    }
    host = rest.slice(0, i);
    portText = rest.slice(i + 1);
    if (host.includes(':')) return { error: `${JSON.stringify(address)} is not a valid address (write an IPv6 address in brackets: "[${host}]:${portText}")` };
    if (!net.isIPv4(host) && !/^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?$/.test(host) && !/^[A-Za-z0-9_.-]+$/.test(host))
      return bad;
  }
  if (!/^\d+$/.test(portText)) return bad;
  const port = Number(portText);
  if (port < 1 || port > 65535) return { error: `${JSON.stringify(address)} has port ${port} outside 1-65535` };
  return { address: net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}` };
}

function validCidr(s: string): boolean {
  const [ip, bits, extra] = s.split('/');
  if (extra !== undefined) return false;
  const family = net.isIP(ip);
  if (!family) return false;
  if (bits === undefined) return true;
  if (!/^\d+$/.test(bits)) return false;
  return Number(bits) <= (family === 4 ? 32 : 128);
}

function validResolverServer(s: string): boolean {
  if (net.isIP(s)) return true;
  const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(s);
  if (v6) return net.isIPv6(v6[1]) && Number(v6[2]) > 0 && Number(v6[2]) < 65536;
  const m = /^([^:]+):(\d+)$/.exec(s);
  return !!m && net.isIPv4(m[1]) && Number(m[2]) > 0 && Number(m[2]) < 65536;
}

// ---------------------------------------------------------------------------
// parse + validate + normalise

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

const isObj = (v: unknown): v is Record<string, any> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Checks the schema cannot express; each runs only where the schema found the shape right. */
function crossCheck(raw: Record<string, any>, problems: Problems): void {
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
      for (const k of ['connect', 'read', 'send'] as const) {
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
      if (typeof s === 'string' && s !== '' && !validResolverServer(s))
        problems.add(['resolver', 'servers', i], `${JSON.stringify(s)} is not a name server address (use an IP, "127.0.0.1:5353" or "[::1]:5353")`);
    });
  }
  if (isObj(raw.limits) && raw.limits.max_header_size !== undefined) {
    const n = parseSize(raw.limits.max_header_size);
    if (n >= 0 && n < 1024) problems.add(['limits', 'max_header_size'], `${show(raw.limits.max_header_size)} is too small (at least 1k)`);
  }
}

function normalise(raw: Record<string, any>, file: string): ProxyConfig {
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
      },
      retries: {
        tries: u.retries?.tries ?? D.retries.tries,
        methods: [...(u.retries?.methods ?? D.retries.methods)],
      },
      max_body: parseSize(u.max_body ?? D.max_body),
      body_buffer_size: parseSize(u.body_buffer_size ?? D.body_buffer_size),
      resolve_interval_ms: u.resolve_interval !== undefined ? parseDuration(u.resolve_interval) : resolver.interval_ms,
      resolver: { servers: [...resolver.servers], timeout_ms: resolver.timeout_ms },
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
    log: { level: log.level ?? DEFAULTS.log.level, access: log.access ?? DEFAULTS.log.access },
    limits: {
      max_header_size: parseSize(limits.max_header_size ?? DEFAULTS.limits.max_header_size),
      header_timeout_ms: parseDuration(limits.header_timeout ?? DEFAULTS.limits.header_timeout),
      keepalive_timeout_ms: parseDuration(limits.keepalive_timeout ?? DEFAULTS.limits.keepalive_timeout),
      max_connections: limits.max_connections ?? DEFAULTS.limits.max_connections,
    },
    resolver,
    routes: (raw.routes as Record<string, any>[]).map((r) => ({
      match: { ...(r.match?.host !== undefined ? { host: r.match.host } : {}), path_prefix: r.match?.path_prefix ?? '/' },
      upstream: r.upstream,
      strip_prefix: r.strip_prefix ?? false,
    })),
    upstreams,
  };
}

/** A documented sample config: README quotes it and the tests parse it. */
export const DEFAULT_CONFIG_EXAMPLE = `# gatewire proxy config (YAML; JSON works too). Durations: 500ms, 10s, 2m, 1h (a bare number is seconds).
# Sizes: 512k, 10mb, 1g (a bare number is bytes; k = 1024).
listen: { host: 127.0.0.1, port: 8080 }   # optional: tls: { cert: FILE, key: FILE }, http2: true
admin: { host: 127.0.0.1, port: 9901 }    # GET /metrics, /status, /healthz; admin: false disables
trust_proxy: false                        # or a list of CIDRs whose X-Forwarded-For is trusted
log: { level: info, access: true }
limits: { max_header_size: 16k, header_timeout: 60s, keepalive_timeout: 75s, max_connections: 0 }
resolver: { interval: 5s, timeout: 2s }   # servers: ["127.0.0.1:53"]; none = the system resolver
routes:
  - match: { host: api.example.com, path_prefix: /v1 }
    upstream: api
    strip_prefix: false
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
    timeouts: { connect: 2s, read: 60s, send: 60s }
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
