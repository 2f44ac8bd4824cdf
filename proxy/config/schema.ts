// The config file's shape: defaults (NGINX's where one exists) and the JSON
// schema ajv checks the file against. `x-kind` marks values whose messages
// need more than ajv's words (messages.ts).
import { Ajv } from 'ajv';
import { DURATION_RE, SIZE_RE } from '../../protocol/units.ts';
import { edgeSchemas } from './edge.ts';

export const DEFAULTS = {
  listen: { host: '0.0.0.0', port: 8080 },
  admin: { host: '127.0.0.1', port: 9901 },
  log: { level: 'info', access: true, flush_interval: '1s' },
  limits: {
    max_header_size: 16 * 1024, // Node's --max-http-header-size default
    header_timeout: '60s', // client_header_timeout 60s
    keepalive_timeout: '75s', // keepalive_timeout 75s
    max_connections: 0, // 0 = no limit
    body_timeout: '60s', // client_body_timeout 60s: between two reads of a request body
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
    timeouts: { connect: '2s', read: '60s', send: '60s', tunnel_idle: '1h' },
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

export type Schema = Record<string, unknown>;
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

const EDGE = edgeSchemas({ duration, size, int, str, bool, obj });

const SERVER_SCHEMA = obj(
  {
    address: str(),
    // The minimum for weight is checked by hand so that the message can say what a weight is.
    weight: { type: 'integer' },
    backup: bool(),
    resolve: bool(),
    max_fails: int(0),
    fail_timeout: duration(),
    ...EDGE.server,
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
  timeouts: obj({ connect: duration(), read: duration(), send: duration(), tunnel_idle: duration() }),
  retries: obj({ tries: int(1, 20), methods: { type: 'array', items: { enum: [...HTTP_METHODS] } } }),
  max_body: size(),
  body_buffer_size: size(),
  resolve_interval: duration(),
  ...EDGE.upstream,
});

const APP_SCHEMA = obj(
  {
    name: { type: 'string', pattern: '^[A-Za-z0-9_.-]+$', 'x-kind': 'name' },
    app: str(),
    listen: { type: ['string', 'array'], pattern: '^(unix:.+|.+:\\d+)$', items: { type: 'string', pattern: '^(unix:.+|.+:\\d+)$', 'x-kind': 'listen' }, minItems: 1, 'x-kind': 'listen' },
    workers: int(1),
    env: { type: 'object', additionalProperties: { type: ['string', 'number', 'boolean', 'null'] } },
    args: { type: 'array', items: { type: ['string', 'number'] } },
  },
  ['app', 'listen'],
);

export const ROOT_SCHEMA = obj(
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
    log: obj({ level: { enum: [...LOG_LEVELS] }, access: bool(), flush_interval: duration() }),
    limits: obj({
      max_header_size: size(),
      header_timeout: duration(),
      keepalive_timeout: duration(),
      max_connections: int(0),
      body_timeout: duration(),
      ...EDGE.limits,
    }),
    compress: EDGE.compress,
    resolver: obj({ servers: { type: 'array', items: str() }, timeout: duration(), interval: duration() }),
    routes: {
      type: 'array',
      minItems: 1,
      items: obj(
        {
          match: obj({ host: str(), path_prefix: { type: 'string', pattern: '^/', 'x-kind': 'path' } }),
          upstream: str(),
          strip_prefix: bool(),
          ...EDGE.route,
          upgrade: bool(),
        },
        // a route needs upstream, static or both: checked in crossCheckEdge, which says so
        [],
      ),
    },
    // Local appservers `gatewire up` starts before the proxy (which checks them and does not use them).
    apps: { type: 'array', items: APP_SCHEMA },
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
export const validateRoot = ajv.compile(ROOT_SCHEMA);
