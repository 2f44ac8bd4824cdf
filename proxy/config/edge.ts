// Config of the edge features NGINX users reach for: static files (routes[].static), compression
// (compress: top-level and per route), rate and connection limits (limits.rate, limits.conn,
// limits.store, routes[].limits, servers[].max_conns, upstream queue). Schema fragments, the
// checks a schema cannot express, and normalisation; schema.ts and normalise.ts plug them in.
import { parseDuration, parseSize } from '../../protocol/units.ts';

type Schema = Record<string, unknown>;
type Seg = string | number;
export interface ProblemSink {
  add(segs: readonly Seg[], message: string, atKey?: boolean): void;
}

// ---------------------------------------------------------------------------
// Normalised shapes.

export type Encoding = 'zstd' | 'br' | 'gzip';

export interface StaticConfig {
  /** Absolute directory (resolved against the config file's directory at load). */
  root: string;
  /** Names tried, in order, for a request that names a directory (NGINX `index`); [] = none. */
  index: string[];
  /** NGINX `try_files`: "$uri", "$uri/", "/fallback.html", and last "@upstream" or "=404". */
  try_files: string[];
  /** First matching glob wins; matched against the path below the route (or the whole path without strip_prefix). */
  cache_control: Array<{ glob: string; value: string }>;
  /** Sidecars looked for, in server preference (NGINX `gzip_static`, `brotli_static`). */
  precompressed: Encoding[];
  dotfiles: 'deny' | 'allow';
}

export interface CompressConfig {
  /** Offered encodings, in server preference when the client's q-values tie. */
  encodings: Encoding[];
  /** Bytes; a response announcing a shorter Content-Length goes out as is (NGINX `gzip_min_length`). */
  min_length: number;
  /** Media types compressed: exact ("application/json"), "text/*" or "*+json" suffix forms. */
  types: string[];
  levels: Record<Encoding, number>;
}

export type LimitKey = { client_address: true } | { header: string } | { cookie: string };

export interface RateZoneConfig {
  name: string;
  key: LimitKey;
  /** Requests per `period_ms`. */
  rate: number;
  period_ms: number;
  burst: number;
  /** true: requests within the burst pass at once; false: they are delayed to the rate (NGINX without `nodelay`). */
  nodelay: boolean;
  dry_run: boolean;
}

export interface ConnZoneConfig {
  name: string;
  key: LimitKey;
  /** Requests in flight per key. */
  max: number;
  /** Requests over `max` that wait for a slot; 0 answers 503 at once (NGINX `limit_conn`). */
  queue: number;
  queue_timeout_ms: number;
  dry_run: boolean;
}

export interface LimitStoreConfig {
  /** null = each process counts on its own. */
  redis: string | null;
  on_store_error: 'allow' | 'deny';
  /** Bound on one store round trip; past it the store counts as failed for that request. */
  timeout_ms: number;
  prefix: string;
}

export interface RouteLimitsConfig {
  rate: string[];
  conn: string[];
}

export interface UpstreamQueueConfig {
  /** Requests waiting for a server under max_conns (NGINX Plus `queue`); 0 = none. */
  size: number;
  timeout_ms: number;
}

// ---------------------------------------------------------------------------
// Defaults (NGINX's where it has one).

export const COMPRESS_DEFAULTS = {
  encodings: ['zstd', 'br', 'gzip'] as Encoding[],
  min_length: '1k', // gzip_min_length 20; a gzip header + trailer alone is 18 bytes, under 1k rarely pays
  // fast levels: these compress responses as they stream, not files ahead of time
  levels: { gzip: 1, br: 3, zstd: 3 } as Record<Encoding, number>, // gzip_comp_level 1
  // NGINX's gzip_types is text/html alone; these are the textual types web apps send
  types: [
    'text/*',
    'application/json',
    '*+json',
    'application/javascript',
    'application/ecmascript',
    'application/xml',
    '*+xml',
    'application/wasm',
    'application/x-ndjson',
    'application/graphql-response+json',
    'image/svg+xml',
    'image/x-icon',
    'image/bmp',
    'font/ttf',
    'font/otf',
    'application/vnd.ms-fontobject',
  ],
};

export const STATIC_DEFAULTS = { index: ['index.html'], try_files: ['$uri', '$uri/'] };
export const STORE_DEFAULTS = { on_store_error: 'allow' as const, timeout: '250ms', prefix: 'gatewire:' };
export const CONN_DEFAULTS = { queue: 0, queue_timeout: '5s' };
export const UPSTREAM_QUEUE_DEFAULTS = { size: 0, timeout: '5s' }; // NGINX Plus queue timeout=60s; a 60 s wait is an outage

// ---------------------------------------------------------------------------
// Schema fragments.

/** schema.ts's builders (durations and sizes keep their patterns and messages there). */
export interface SchemaBuilders {
  duration: () => Schema;
  size: () => Schema;
  int: (minimum: number, maximum?: number) => Schema;
  str: () => Schema;
  bool: () => Schema;
  obj: (properties: Record<string, Schema>, required?: string[]) => Schema;
}
const ENCODINGS = ['zstd', 'br', 'gzip'];

export const RATE_RE = /^\s*(\d+(?:\.\d+)?)\s*r\/(s|m)\s*$/;

export function edgeSchemas({ duration, size, int, str, bool, obj }: SchemaBuilders) {
  const COMPRESS_SCHEMA: Schema = {
    type: ['object', 'boolean'],
    properties: {
      encodings: { type: 'array', minItems: 1, items: { enum: ENCODINGS } },
      min_length: size(),
      types: { type: 'array', items: str() },
      levels: obj({ gzip: int(1, 9), br: int(0, 11), zstd: int(1, 19) }),
    },
    additionalProperties: false,
  };

  const STATIC_SCHEMA: Schema = obj(
    {
      root: str(),
      index: { type: ['array', 'boolean'], items: str() },
      try_files: { type: 'array', minItems: 1, items: str() },
      cache_control: { type: 'object', additionalProperties: { type: 'string' } },
      precompressed: { type: ['array', 'boolean'], items: { enum: ['br', 'gzip', 'zstd'] } },
      dotfiles: { enum: ['deny', 'allow'] },
    },
    ['root'],
  );

  const LIMIT_KEY_SCHEMA: Schema = {
    type: ['object', 'string'],
    properties: { header: str(), cookie: str(), client_address: { const: true } },
    additionalProperties: false,
    minProperties: 1,
    maxProperties: 1,
  };

  const limits: Record<string, Schema> = {
    rate: {
      type: 'object',
      additionalProperties: obj(
        { key: LIMIT_KEY_SCHEMA, rate: { type: 'string', 'x-kind': 'rate' }, burst: int(0), nodelay: bool(), dry_run: bool() },
        ['rate'],
      ),
    },
    conn: {
      type: 'object',
      additionalProperties: obj({ key: LIMIT_KEY_SCHEMA, max: int(1), queue: int(0), queue_timeout: duration(), dry_run: bool() }, ['max']),
    },
    store: {
      type: ['object', 'string'],
      properties: {
        redis: str(),
        on_store_error: { enum: ['allow', 'deny'] },
        timeout: duration(),
        prefix: { type: 'string' },
      },
      additionalProperties: false,
    },
  };

  const route: Record<string, Schema> = {
    static: STATIC_SCHEMA,
    compress: COMPRESS_SCHEMA,
    limits: obj({ rate: { type: 'array', items: str() }, conn: { type: 'array', items: str() } }),
  };

  const server: Record<string, Schema> = { max_conns: int(0) };
  const upstream: Record<string, Schema> = { queue: obj({ size: int(0), timeout: duration() }) };
  return { compress: COMPRESS_SCHEMA, limits, route, server, upstream };
}

// ---------------------------------------------------------------------------
// Checks the schema cannot express.

const isObj = (v: unknown): v is Record<string, any> => v !== null && typeof v === 'object' && !Array.isArray(v);

function checkKey(key: unknown, segs: Seg[], problems: ProblemSink): void {
  if (typeof key === 'string' && key !== 'client_address') {
    problems.add(segs, `${JSON.stringify(key)} is not a limit key (use client_address, { header: X-Api-Key } or { cookie: session })`);
  }
}

export function crossCheckEdge(raw: Record<string, any>, problems: ProblemSink): void {
  const limits = isObj(raw.limits) ? raw.limits : {};
  const rateZones = isObj(limits.rate) ? limits.rate : {};
  const connZones = isObj(limits.conn) ? limits.conn : {};
  for (const [name, z] of Object.entries(rateZones)) {
    if (!isObj(z)) continue;
    checkKey(z.key, ['limits', 'rate', name, 'key'], problems);
    if (typeof z.rate === 'string') {
      const m = RATE_RE.exec(z.rate);
      if (!m) problems.add(['limits', 'rate', name, 'rate'], `${JSON.stringify(z.rate)} is not a rate (write "10r/s" or "600r/m", as NGINX's limit_req_zone rate=)`);
      else if (Number(m[1]) <= 0) problems.add(['limits', 'rate', name, 'rate'], 'must be more than 0 (e.g. "10r/s")');
    }
  }
  for (const [name, z] of Object.entries(connZones)) if (isObj(z)) checkKey(z.key, ['limits', 'conn', name, 'key'], problems);
  if (typeof limits.store === 'string' && limits.store !== 'memory') {
    problems.add(['limits', 'store'], `${JSON.stringify(limits.store)} is not a store (use memory, or { redis: "redis://127.0.0.1:6379" })`);
  }
  if (isObj(limits.store) && typeof limits.store.redis === 'string' && !/^rediss?:\/\/[^/]+(\/\d+)?$/.test(limits.store.redis)) {
    problems.add(['limits', 'store', 'redis'], `${JSON.stringify(limits.store.redis)} is not a Redis URL (write "redis://host:6379" or "redis://:password@host:6379/0")`);
  }
  if (isObj(limits.store) && limits.store.redis === undefined) problems.add(['limits', 'store', 'redis'], 'missing required key (add redis: "redis://127.0.0.1:6379", or store: memory)');
  if (!Array.isArray(raw.routes)) return;
  raw.routes.forEach((route: unknown, i: number) => {
    if (!isObj(route)) return;
    const hasUpstream = typeof route.upstream === 'string';
    if (route.upstream === undefined && route.static === undefined) {
      problems.add(['routes', i, 'upstream'], 'missing required key (name one of the upstreams, or serve a directory with static: { root: DIR })');
    }
    if (isObj(route.static)) {
      const s = route.static;
      if (Array.isArray(s.try_files)) {
        s.try_files.forEach((t: unknown, j: number) => {
          if (typeof t !== 'string') return;
          const last = j === s.try_files.length - 1;
          const at = ['routes', i, 'static', 'try_files', j];
          if (t === '@upstream') {
            if (!last) problems.add(at, '"@upstream" must be the last entry (the route\'s upstream answers when no file matched)');
            if (!hasUpstream) problems.add(at, '"@upstream" needs the route\'s upstream (add upstream: NAME to this route)');
          } else if (/^=\d{3}$/.test(t)) {
            if (!last) problems.add(at, `${JSON.stringify(t)} must be the last entry`);
          } else if (t.startsWith('@')) {
            problems.add(at, `${JSON.stringify(t)}: the only named fallback is "@upstream" (the route's upstream)`);
          } else if (t !== '$uri' && t !== '$uri/' && !t.startsWith('/')) {
            problems.add(at, `${JSON.stringify(t)} is not a try_files entry (use "$uri", "$uri/", "/index.html", "=404" or "@upstream")`);
          }
        });
      }
      if (typeof s.root === 'string' && s.root.includes('\0')) problems.add(['routes', i, 'static', 'root'], 'must not contain NUL');
    }
    if (isObj(route.limits)) {
      for (const kind of ['rate', 'conn'] as const) {
        const zones = kind === 'rate' ? rateZones : connZones;
        const list = route.limits[kind];
        if (!Array.isArray(list)) continue;
        list.forEach((z: unknown, j: number) => {
          if (typeof z === 'string' && !(z in zones)) {
            const defined = Object.keys(zones);
            problems.add(['routes', i, 'limits', kind, j], `${JSON.stringify(z)} is not defined in limits.${kind} (defined: ${defined.join(', ') || 'none'})`);
          }
        });
      }
    }
  });
}

// ---------------------------------------------------------------------------
// Normalisation.

function normaliseKey(key: unknown): LimitKey {
  if (isObj(key) && typeof key.header === 'string') return { header: key.header.toLowerCase() };
  if (isObj(key) && typeof key.cookie === 'string') return { cookie: key.cookie };
  return { client_address: true };
}

export function normaliseCompress(v: unknown): CompressConfig | null {
  if (v === undefined || v === false) return null;
  const c = isObj(v) ? v : {};
  return {
    encodings: [...new Set<Encoding>(c.encodings ?? COMPRESS_DEFAULTS.encodings)],
    min_length: parseSize(c.min_length ?? COMPRESS_DEFAULTS.min_length),
    types: (c.types ?? COMPRESS_DEFAULTS.types).map((t: string) => t.toLowerCase()),
    levels: { ...COMPRESS_DEFAULTS.levels, ...(c.levels ?? {}) },
  };
}

export function normaliseStatic(v: unknown, resolveRoot: (dir: string) => string): StaticConfig | null {
  if (!isObj(v)) return null;
  const index = v.index === false ? [] : v.index === true || v.index === undefined ? STATIC_DEFAULTS.index : v.index;
  const pre = v.precompressed === true ? ['br', 'gzip'] : Array.isArray(v.precompressed) ? v.precompressed : [];
  return {
    root: resolveRoot(v.root),
    index: [...index],
    try_files: [...(v.try_files ?? STATIC_DEFAULTS.try_files)],
    cache_control: Object.entries<string>(v.cache_control ?? {}).map(([glob, value]) => ({ glob, value })),
    precompressed: [...new Set<Encoding>(pre)],
    dotfiles: v.dotfiles ?? 'deny',
  };
}

export function normaliseLimits(limits: Record<string, any>): {
  rate: Record<string, RateZoneConfig>;
  conn: Record<string, ConnZoneConfig>;
  store: LimitStoreConfig;
} {
  const rate: Record<string, RateZoneConfig> = {};
  for (const [name, z] of Object.entries<Record<string, any>>(limits.rate ?? {})) {
    const m = RATE_RE.exec(z.rate) as RegExpExecArray;
    rate[name] = { name, key: normaliseKey(z.key), rate: Number(m[1]), period_ms: m[2] === 's' ? 1000 : 60_000, burst: z.burst ?? 0, nodelay: z.nodelay ?? true, dry_run: z.dry_run ?? false };
  }
  const conn: Record<string, ConnZoneConfig> = {};
  for (const [name, z] of Object.entries<Record<string, any>>(limits.conn ?? {})) {
    conn[name] = {
      name,
      key: normaliseKey(z.key),
      max: z.max,
      queue: z.queue ?? CONN_DEFAULTS.queue,
      queue_timeout_ms: parseDuration(z.queue_timeout ?? CONN_DEFAULTS.queue_timeout),
      dry_run: z.dry_run ?? false,
    };
  }
  const s = isObj(limits.store) ? limits.store : {};
  return {
    rate,
    conn,
    store: {
      redis: typeof s.redis === 'string' ? s.redis : null,
      on_store_error: s.on_store_error ?? STORE_DEFAULTS.on_store_error,
      timeout_ms: parseDuration(s.timeout ?? STORE_DEFAULTS.timeout),
      prefix: s.prefix ?? STORE_DEFAULTS.prefix,
    },
  };
}

export function normaliseRouteLimits(v: unknown): RouteLimitsConfig {
  const l = isObj(v) ? v : {};
  return { rate: [...(l.rate ?? [])], conn: [...(l.conn ?? [])] };
}

export function normaliseUpstreamQueue(v: unknown): UpstreamQueueConfig {
  const q = isObj(v) ? v : {};
  return { size: q.size ?? UPSTREAM_QUEUE_DEFAULTS.size, timeout_ms: parseDuration(q.timeout ?? UPSTREAM_QUEUE_DEFAULTS.timeout) };
}
