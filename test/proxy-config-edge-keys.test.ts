// The edge keys (routes[].static, compress, limits.rate/conn/store, routes[].limits,
// servers[].max_conns, upstream queue) are validated like every other key: each mistake is
// reported at its line with the fix, and a valid config normalises to NGINX-like defaults.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { ConfigError, parseConfig } from '../proxy/config.ts';

function problemsOf(text: string): string[] {
  try {
    parseConfig(text, 'gatewire.yaml');
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${err}`);
    return err.message.split('\n');
  }
  assert.fail('the config was accepted');
}

test('mistakes in the edge keys are reported at their line, with the fix', () => {
  const problems = problemsOf(`compress: { encodings: [gzip, lz4], min_length: lots }
limits:
  store: { redis: "http://127.0.0.1:6379", on_store_error: ignore }
  rate:
    api: { rate: "10 per second", burst: -1 }
    login: { key: { header: X-User, cookie: sid }, rate: 5r/m }
  conn:
    per_ip: { key: address, max: 0 }
routes:
  - match: { path_prefix: /static }
    static: { root: ./public, try_files: ["@upstream", "$uri"], precompresed: true }
  - match: { path_prefix: /app }
    upstream: app
    limits: { rate: [api, nope], conn: [per_ip] }
  - match: { path_prefix: /empty }
upstreams:
  app:
    servers: [{ address: "127.0.0.1:9000", max_conns: -2 }]
    queue: { size: 10, timeout: soon }
`);
  const expected = [
    'gatewire.yaml:1:31: compress.encodings[1]: "lz4" is not one of zstd, br, gzip',
    'gatewire.yaml:1:49: compress.min_length: expected a number of bytes or a size like "10mb", got "lots"',
    'gatewire.yaml:3:19: limits.store.redis: "http://127.0.0.1:6379" is not a Redis URL (write "redis://host:6379" or "redis://:password@host:6379/0")',
    'gatewire.yaml:3:60: limits.store.on_store_error: "ignore" is not one of allow, deny',
    'gatewire.yaml:5:18: limits.rate.api.rate: "10 per second" is not a rate (write "10r/s" or "600r/m", as NGINX\'s limit_req_zone rate=)',
    'gatewire.yaml:5:42: limits.rate.api.burst: must be at least 0, got -1',
    'gatewire.yaml:6:19: limits.rate.login.key: must name exactly one of header, cookie, client_address, got header, cookie',
    'gatewire.yaml:8:20: limits.conn.per_ip.key: "address" is not a limit key (use client_address, { header: X-Api-Key } or { cookie: session })',
    'gatewire.yaml:8:34: limits.conn.per_ip.max: must be at least 1, got 0',
    'gatewire.yaml:11:43: routes[0].static.try_files[0]: "@upstream" must be the last entry (the route\'s upstream answers when no file matched)',
    'gatewire.yaml:11:43: routes[0].static.try_files[0]: "@upstream" needs the route\'s upstream (add upstream: NAME to this route)',
    'gatewire.yaml:11:65: routes[0].static.precompresed: unknown key (did you mean "precompressed"?)',
    'gatewire.yaml:14:27: routes[1].limits.rate[1]: "nope" is not defined in limits.rate (defined: api, login)',
    'gatewire.yaml:15:5: routes[2].upstream: missing required key (name one of the upstreams, or serve a directory with static: { root: DIR })',
    'gatewire.yaml:18:55: upstreams.app.servers[0].max_conns: must be at least 0, got -2',
    'gatewire.yaml:19:33: upstreams.app.queue.timeout: expected a number of seconds or a duration like "10s", got "soon"',
  ];
  for (const line of expected) assert.ok(problems.includes(line), `missing: ${line}\ngot:\n${problems.join('\n')}`);
});

test('edge keys normalise with NGINX-like defaults; static roots resolve against the config file', () => {
  const cfg = parseConfig(
    `compress: true
limits:
  store: { redis: "redis://127.0.0.1:6379" }
  rate: { api: { rate: 10r/s, burst: 20 } }
  conn: { per_ip: { max: 10 } }
routes:
  - match: { path_prefix: /static }
    static: { root: public, precompressed: true, cache_control: { "*.html": no-cache } }
  - match: { path_prefix: / }
    upstream: app
    compress: { encodings: [gzip] }
    limits: { rate: [api], conn: [per_ip] }
upstreams:
  app: { servers: [{ address: "127.0.0.1:9000", max_conns: 8 }], queue: { size: 100 } }
`,
    '/etc/gatewire/proxy.yaml',
  );
  assert.deepEqual(cfg.compress?.encodings, ['zstd', 'br', 'gzip']);
  assert.equal(cfg.compress?.min_length, 1024);
  assert.deepEqual(cfg.routes[0].static, {
    root: path.resolve('/etc/gatewire/public'),
    index: ['index.html'],
    try_files: ['$uri', '$uri/'],
    cache_control: [{ glob: '*.html', value: 'no-cache' }],
    precompressed: ['br', 'gzip'],
    dotfiles: 'deny',
  });
  assert.equal(cfg.routes[0].upstream, null);
  assert.deepEqual(cfg.routes[0].compress?.encodings, ['zstd', 'br', 'gzip'], 'the top-level compress applies to every route');
  assert.deepEqual(cfg.routes[1].compress?.encodings, ['gzip']);
  assert.deepEqual(cfg.routes[1].limits, { rate: ['api'], conn: ['per_ip'] });
  assert.deepEqual(cfg.limits.rate.api, { name: 'api', key: { client_address: true }, rate: 10, period_ms: 1000, burst: 20, nodelay: true, dry_run: false });
  assert.deepEqual(cfg.limits.conn.per_ip, { name: 'per_ip', key: { client_address: true }, max: 10, queue: 0, queue_timeout_ms: 5000, dry_run: false });
  assert.deepEqual(cfg.limits.store, { redis: 'redis://127.0.0.1:6379', on_store_error: 'allow', timeout_ms: 250, prefix: 'gatewire:' });
  assert.equal(cfg.upstreams.app.servers[0].max_conns, 8);
  assert.deepEqual(cfg.upstreams.app.queue, { size: 100, timeout_ms: 5000 });
});
