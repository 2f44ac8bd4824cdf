// A valid config comes out normalised: durations in *_ms, sizes in bytes,
// addresses in one spelling, and NGINX-like defaults for everything left out.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULT_CONFIG_EXAMPLE, normaliseAddress, parseConfig, parseDuration, parseSize } from '../proxy/config.ts';

test('durations: ms, s, m, h, compound, bare numbers are seconds', () => {
  const cases: Array<[string | number, number]> = [
    ['500ms', 500],
    ['10s', 10_000],
    ['2m', 120_000],
    ['1h', 3_600_000],
    ['1m30s', 90_000],
    ['1.5s', 1500],
    [10, 10_000],
    [0.25, 250],
    ['10', 10_000],
  ];
  for (const [input, ms] of cases) assert.equal(parseDuration(input), ms, String(input));
  for (const bad of ['ten', '10 parsecs', '-1s', 's', '', '10x']) assert.ok(Number.isNaN(parseDuration(bad)), bad);
  assert.ok(Number.isNaN(parseDuration(-1)));
});

test('sizes: k/m/g are powers of 1024 like NGINX, bare numbers are bytes', () => {
  const cases: Array<[string | number, number]> = [
    ['512k', 512 * 1024],
    ['10mb', 10 * 1024 * 1024],
    ['10M', 10 * 1024 * 1024],
    ['1g', 1024 ** 3],
    ['100', 100],
    [4096, 4096],
    ['1.5k', 1536],
  ];
  for (const [input, bytes] of cases) assert.equal(parseSize(input), bytes, String(input));
  for (const bad of ['big', '10 parsecs', '1t', '']) assert.ok(Number.isNaN(parseSize(bad)), bad);
});

test('defaults follow NGINX where it has one', () => {
  const cfg = parseConfig('routes: [{ upstream: app }]\nupstreams:\n  app:\n    servers: [{ address: "127.0.0.1:9000" }]\n');
  assert.equal(cfg.file, '<inline>');
  assert.deepEqual(cfg.listen, { host: '0.0.0.0', port: 8080, http2: false });
  assert.deepEqual(cfg.admin, { host: '127.0.0.1', port: 9901 });
  assert.equal(cfg.trust_proxy, false);
  assert.deepEqual(cfg.log, { level: 'info', access: true, flush_interval_ms: 1000 });
  assert.deepEqual(cfg.limits, {
    max_header_size: 16384,
    header_timeout_ms: 60_000,
    keepalive_timeout_ms: 75_000,
    max_connections: 0,
    body_timeout_ms: 60_000,
    rate: {},
    conn: {},
    store: { redis: null, on_store_error: 'allow', timeout_ms: 250, prefix: 'gatewire:' },
  });
  // compression is off unless asked for, as NGINX's gzip off
  assert.equal(cfg.compress, null);
  assert.deepEqual(cfg.resolver, { servers: [], timeout_ms: 2000, interval_ms: 5000 });
  assert.deepEqual(cfg.routes, [{ match: { path_prefix: '/' }, upstream: 'app', strip_prefix: false, static: null, compress: null, limits: { rate: [], conn: [] }, upgrade: true }]);
  assert.deepEqual(cfg.upstreams.app, {
    name: 'app',
    protocol: 'gatewire',
    balance: 'round_robin',
    hash_key: null,
    servers: [{ address: '127.0.0.1:9000', weight: 1, backup: false, resolve: false }],
    max_fails: 1,
    fail_timeout_ms: 10_000,
    health_check: null,
    connections_per_server: 4,
    timeouts: { connect_ms: 2000, read_ms: 60_000, send_ms: 60_000, tunnel_idle_ms: 3_600_000 },
    retries: { tries: 2, methods: ['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE'] },
    max_body: 1024 * 1024,
    body_buffer_size: 64 * 1024,
    resolve_interval_ms: 5000,
    resolver: { servers: [], timeout_ms: 2000 },
    queue: { size: 0, timeout_ms: 5000 },
  });
});

test('the documented example parses, with every key normalised', () => {
  const cfg = parseConfig(DEFAULT_CONFIG_EXAMPLE, 'example.yaml');
  const api = cfg.upstreams.api;
  assert.equal(api.balance, 'least_conn');
  assert.deepEqual(api.servers, [
    { address: 'unix:/run/gatewire/api.sock', weight: 3, backup: false, resolve: false },
    { address: 'appserver:9000', weight: 1, backup: false, resolve: true },
    { address: '10.0.0.9:9000', weight: 1, backup: true, resolve: false },
  ]);
  assert.equal(api.max_fails, 3);
  assert.equal(api.fail_timeout_ms, 10_000);
  assert.deepEqual(api.health_check, { path: '/healthz', interval_ms: 5000, timeout_ms: 1000, rise: 2, fall: 3 });
  assert.equal(api.max_body, 10 * 1024 * 1024);
  assert.deepEqual(cfg.upstreams.web.hash_key, { cookie: 'session' });
  assert.deepEqual(
    cfg.upstreams.web.servers.map((s) => s.address),
    ['127.0.0.1:8000', '127.0.0.1:8001'],
  );
  assert.deepEqual(cfg.routes[0], { match: { host: 'api.example.com', path_prefix: '/v1' }, upstream: 'api', strip_prefix: false, static: null, compress: null, limits: { rate: [], conn: [] }, upgrade: true });
});

test('overrides: per-server max_fails/fail_timeout, health_check: true, admin: false, resolver and resolve_interval, tls', () => {
  const cfg = parseConfig(`listen: { host: "::1", port: 8443, tls: { cert: c.pem, key: k.pem }, http2: true }
admin: false
trust_proxy: [10.0.0.0/8, "::1"]
resolver: { servers: ["127.0.0.1:5353"], interval: 1s, timeout: 500ms }
routes: [{ match: { host: a.test, path_prefix: /api }, upstream: a, strip_prefix: true }]
upstreams:
  a:
    protocol: uwsgi
    max_fails: 0
    health_check: true
    retries: { tries: 1, methods: [] }
    servers:
      - { address: "[::1]:9000", max_fails: 5, fail_timeout: 30s, weight: 2 }
      - { address: "app.local:9000", resolve: true }
  b:
    resolve_interval: 250ms
    health_check: { expect_status: [200, 204] }
    servers: [{ address: "unix:/tmp/b.sock" }]
`);
  assert.deepEqual(cfg.listen, { host: '::1', port: 8443, tls: { cert: 'c.pem', key: 'k.pem' }, http2: true });
  assert.equal(cfg.admin, null);
  assert.deepEqual(cfg.trust_proxy, ['10.0.0.0/8', '::1']);
  assert.deepEqual(cfg.resolver, { servers: ['127.0.0.1:5353'], interval_ms: 1000, timeout_ms: 500 });
  assert.deepEqual(cfg.routes[0], { match: { host: 'a.test', path_prefix: '/api' }, upstream: 'a', strip_prefix: true, static: null, compress: null, limits: { rate: [], conn: [] }, upgrade: true });
  const a = cfg.upstreams.a;
  assert.equal(a.max_fails, 0);
  assert.deepEqual(a.health_check, { path: '/healthz', interval_ms: 5000, timeout_ms: 1000, rise: 2, fall: 3 });
  assert.deepEqual(a.retries, { tries: 1, methods: [] });
  assert.deepEqual(a.servers[0], { address: '[::1]:9000', weight: 2, backup: false, resolve: false, max_fails: 5, fail_timeout_ms: 30_000 });
  assert.equal(a.resolve_interval_ms, 1000, 'resolver.interval is the default resolve_interval');
  assert.deepEqual(a.resolver, { servers: ['127.0.0.1:5353'], timeout_ms: 500 });
  assert.equal(cfg.upstreams.b.resolve_interval_ms, 250);
  assert.deepEqual(cfg.upstreams.b.health_check?.expect_status, [200, 204]);
});

test('JSON is accepted and gives the same config as the equivalent YAML', () => {
  const yaml = parseConfig('routes: [{ upstream: a }]\nupstreams: { a: { servers: [{ address: "127.0.0.1:1" }], max_body: 2k } }\n');
  const json = parseConfig('{"routes":[{"upstream":"a"}],"upstreams":{"a":{"servers":[{"address":"127.0.0.1:1"}],"max_body":"2k"}}}');
  assert.deepEqual(json, yaml);
  assert.equal(json.upstreams.a.max_body, 2048);
});

test('the apps: section of `gatewire up` goes through the same schema and problem reporter', () => {
  const cfg = parseConfig('apps: [{ name: x, app: examples/hello.ts, listen: "unix:/tmp/x.sock", env: { N: 1 } }]\nroutes: [{ upstream: a }]\nupstreams: { a: { servers: [{ address: "127.0.0.1:1" }] } }\n');
  assert.deepEqual(cfg.apps, [{ name: 'x', app: 'examples/hello.ts', listen: ['unix:/tmp/x.sock'], env: { N: '1' }, args: [] }]);
  assert.throws(
    () => parseConfig('apps:\n  - app: a.ts\n    listen: nowhere\n    worker: 2\nroutes: [{ upstream: a }]\nupstreams: { a: { servers: [{ address: "127.0.0.1:1" }] } }\n', 'g.yaml'),
    (err: Error) =>
      err.message.includes('g.yaml:3:13: apps[0].listen: "nowhere" is not a listen address') && err.message.includes('g.yaml:4:5: apps[0].worker: unknown key (did you mean "workers"?)'),
  );
});

test('address forms normalise to one spelling', () => {
  assert.deepEqual(normaliseAddress('127.0.0.1:9000', 'gatewire'), { address: '127.0.0.1:9000' });
  assert.deepEqual(normaliseAddress('[::1]:9000', 'gatewire'), { address: '[::1]:9000' });
  assert.deepEqual(normaliseAddress('[0:0::1]:9000', 'gatewire'), { address: '[0:0::1]:9000' });
  assert.deepEqual(normaliseAddress('unix:/run/a.sock', 'uwsgi'), { address: 'unix:/run/a.sock' });
  assert.deepEqual(normaliseAddress('http://app:8000', 'http'), { address: 'app:8000' });
  assert.deepEqual(normaliseAddress('http://[::1]:8000/', 'http'), { address: '[::1]:8000' });
  assert.deepEqual(normaliseAddress('app:0', 'gatewire'), { error: '"app:0" has port 0 outside 1-65535' });
  assert.deepEqual(normaliseAddress('https://app:8000', 'http'), { error: '"https://app:8000" is not a valid address (only http:// URLs are accepted)' });
  assert.deepEqual(normaliseAddress('a b:80', 'http'), {
    error: '"a b:80" is not a valid address (use "host:port", "[::1]:port" or "unix:/path.sock" or "http://host:port")',
  });
});
