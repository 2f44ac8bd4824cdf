// Invalid configs are reported like a compiler would: every problem, one per line,
// FILE:LINE:COL: KEY.PATH: WHAT IS WRONG (THE FIX) — checked word for word.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { ConfigError, loadConfig, parseConfig } from '../proxy/config.ts';
import { tempDir } from './helpers/net.ts';

function problemsOf(text: string, file = 'gatewire.yaml'): string[] {
  try {
    parseConfig(text, file);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${err}`);
    assert.equal(err.code, 'GW_CONFIG_INVALID');
    return err.message.split('\n');
  }
  assert.fail('the config was accepted');
}

const BROKEN = `listen: { port: 8080 }
admin: { port: 8080 }
routes:
  - match: { path_prefix: / }
    upstream: api
  - upstream: webb
    strip_prefx: true
upstreams:
  api:
    balance: leastconn
    fail_timeout: ten
    max_body: 10 parsecs
    servers:
      - { address: "localhost", weight: 0 }
      - { address: "::1:80" }
  web:
    balance: hash
    servers: []
    timeouts: { connect: "2s", reed: 1 }
    retries: { tries: "2", methods: [GET, POTS] }
  other:
    health_check: { path: healthz, interval: 1s, timeout: 2s }
`;

test('every problem of a broken YAML config is reported, in file order, word for word', () => {
  assert.deepEqual(problemsOf(BROKEN), [
    'gatewire.yaml:2:16: admin.port: 8080 is also listen.port (use a different port, or admin: false to disable the admin server)',
    'gatewire.yaml:6:5: routes[1].match: same host and path_prefix as routes[0], so it would never match (remove it or change its match)',
    'gatewire.yaml:6:15: routes[1].upstream: "webb" is not defined in upstreams (defined: api, web, other)',
    'gatewire.yaml:7:5: routes[1].strip_prefx: unknown key (did you mean "strip_prefix"?)',
    'gatewire.yaml:10:14: upstreams.api.balance: "leastconn" is not one of round_robin, least_conn, ip_hash, hash, random_two (did you mean "least_conn"?)',
    'gatewire.yaml:11:19: upstreams.api.fail_timeout: expected a number of seconds or a duration like "10s", got "ten"',
    'gatewire.yaml:12:15: upstreams.api.max_body: expected a number of bytes or a size like "10mb", got "10 parsecs"',
    'gatewire.yaml:14:20: upstreams.api.servers[0].address: "localhost" has no port (write "localhost:PORT")',
    'gatewire.yaml:14:41: upstreams.api.servers[0].weight: must be at least 1, got 0 (weights are relative shares; to keep a server idle until the others are down use backup: true)',
    'gatewire.yaml:15:20: upstreams.api.servers[1].address: "::1:80" is not a valid address (write an IPv6 address in brackets: "[::1]:80")',
    'gatewire.yaml:16:3: upstreams.web.hash_key: missing required key for balance: hash (add hash_key: { header: X-User-Id }, { cookie: session } or { uri: true })',
    'gatewire.yaml:18:14: upstreams.web.servers: no servers (add at least one, e.g. - { address: "127.0.0.1:9000" })',
    'gatewire.yaml:19:32: upstreams.web.timeouts.reed: unknown key (did you mean "read"?)',
    'gatewire.yaml:20:23: upstreams.web.retries.tries: expected a whole number, got "2"',
    'gatewire.yaml:20:43: upstreams.web.retries.methods[1]: "POTS" is not one of GET, HEAD, OPTIONS, PUT, DELETE, POST, PATCH, TRACE, CONNECT (did you mean "POST"?)',
    'gatewire.yaml:21:3: upstreams.other.servers: missing required key (add servers: [{ address: "127.0.0.1:9000" }])',
    'gatewire.yaml:22:27: upstreams.other.health_check.path: "healthz" must start with "/" (write "/healthz")',
    'gatewire.yaml:22:59: upstreams.other.health_check.timeout: "2s" is longer than interval "1s" (a probe must finish before the next one starts)',
  ]);
});

test('the ConfigError carries the first problem as file, line, column and key path', () => {
  try {
    parseConfig(BROKEN, 'gatewire.yaml');
    assert.fail('accepted');
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    assert.equal(err.file, 'gatewire.yaml');
    assert.equal(err.line, 2);
    assert.equal(err.column, 16);
    assert.equal(err.keyPath, 'admin.port');
    assert.equal(err.problems.length, 18);
  }
});

test('JSON configs get the same messages with their own line:col', () => {
  const json = `{
  "routes": [{ "upstream": "api" }],
  "upstreams": {
    "api": {
      "protocol": "uwsgy",
      "servers": [{ "adress": "127.0.0.1:9000" }],
      "timeouts": { "read": true }
    }
  }
}
`;
  assert.deepEqual(problemsOf(json, 'gatewire.json'), [
    'gatewire.json:5:19: upstreams.api.protocol: "uwsgy" is not one of gatewire, uwsgi, http (did you mean "uwsgi"?)',
    'gatewire.json:6:19: upstreams.api.servers[0].address: missing required key (add address: "host:port" or "unix:/path.sock")',
    'gatewire.json:6:21: upstreams.api.servers[0].adress: unknown key (did you mean "address"?)',
    'gatewire.json:7:29: upstreams.api.timeouts.read: expected a number of seconds or a duration like "10s", got true',
  ]);
});

test('top-level mistakes: missing routes and upstreams, unknown keys without a near match, wrong types', () => {
  assert.deepEqual(problemsOf('listen: 8080\nfoo: 1\nlog: { level: verbose }\n'), [
    'gatewire.yaml:1:1: routes: missing required key (add routes: [{ match: { path_prefix: / }, upstream: NAME }])',
    'gatewire.yaml:1:1: upstreams: missing required key (add upstreams: { NAME: { servers: [{ address: "127.0.0.1:9000" }] } })',
    'gatewire.yaml:1:9: listen: expected a mapping, got 8080',
    'gatewire.yaml:2:1: foo: unknown key (allowed: listen, admin, trust_proxy, workers, log, limits, compress, resolver, routes, apps, upstreams)',
    'gatewire.yaml:3:15: log.level: "verbose" is not one of fatal, error, warn, info, debug, trace, silent',
  ]);
});

test('cross-checks: URL address outside http, every server a backup, hash_key without hash, bad CIDR and name server', () => {
  const text = `trust_proxy: ["10.0.0.0/33", 127.0.0.1]
resolver: { servers: [dns.local] }
routes: [{ upstream: a }, { upstream: b }]
upstreams:
  a:
    hash_key: { header: X-User }
    servers:
      - { address: "http://127.0.0.1:8000", backup: true }
  b:
    protocol: http
    balance: hash
    hash_key: { header: X-User, uri: true }
    servers:
      - { address: "http://127.0.0.1:8000/app" }
      - { address: "unix:relative.sock" }
      - { address: "127.0.0.1:9000", resolve: true }
`;
  assert.deepEqual(problemsOf(text), [
    'gatewire.yaml:1:15: trust_proxy[0]: "10.0.0.0/33" is not an IP address or CIDR (e.g. "10.0.0.0/8", "127.0.0.1")',
    'gatewire.yaml:2:23: resolver.servers[0]: "dns.local" is not a name server address (use an IP, "127.0.0.1:5353" or "[::1]:5353")',
    'gatewire.yaml:3:27: routes[1].match: same host and path_prefix as routes[0], so it would never match (remove it or change its match)',
    'gatewire.yaml:6:5: upstreams.a.hash_key: is only used with balance: hash, but balance is round_robin (remove hash_key or set balance: hash)',
    'gatewire.yaml:8:7: upstreams.a.servers: every server is a backup (a backup only takes traffic when no primary is available; make at least one a primary)',
    'gatewire.yaml:8:20: upstreams.a.servers[0].address: "http://127.0.0.1:8000" is not a valid address (a URL is only accepted with protocol: http; write "127.0.0.1:8000")',
    'gatewire.yaml:12:15: upstreams.b.hash_key: must name exactly one of header, cookie, uri, got header, uri',
    'gatewire.yaml:14:20: upstreams.b.servers[0].address: "http://127.0.0.1:8000/app" is not a valid address (a server address has no path; write "http://127.0.0.1:8000")',
    'gatewire.yaml:15:20: upstreams.b.servers[1].address: "unix:relative.sock" is not a valid address (a Unix socket needs an absolute path: "unix:/path.sock")',
    'gatewire.yaml:16:38: upstreams.b.servers[2].resolve: has no effect on "127.0.0.1:9000", which is not a DNS name (remove resolve: true)',
  ]);
});

test('YAML syntax errors and an empty file are reported with their position', () => {
  assert.deepEqual(problemsOf('routes: [1, 2\nupstreams: {}\n'), [
    'gatewire.yaml:2:1: syntax error: Flow sequence in block collection must be sufficiently indented and end with a ]',
  ]);
  assert.deepEqual(problemsOf('a: 1\na: 2\n'), ['gatewire.yaml:2:1: syntax error: Map keys must be unique']);
  assert.deepEqual(problemsOf(''), ['gatewire.yaml:1:1: the file must be a mapping of settings (listen, admin, routes, upstreams, ...), got an empty document']);
});

test('loadConfig reads the file, names it in messages, and turns an unreadable file into a ConfigError', async (t) => {
  const { dir, cleanup } = tempDir('gw-cfg-');
  t.after(cleanup);
  const file = path.join(dir, 'gatewire.yaml');
  writeFileSync(file, 'routes: [{ upstream: api }]\nupstreams:\n  api:\n    servers: [{ address: "127.0.0.1:9000", wieght: 2 }]\n');
  await assert.rejects(loadConfig(file), (err: ConfigError) => {
    assert.equal(err.message, `${file}:4:44: upstreams.api.servers[0].wieght: unknown key (did you mean "weight"?)`);
    return true;
  });
  const missing = path.join(dir, 'nope.yaml');
  await assert.rejects(loadConfig(missing), (err: ConfigError) => {
    assert.equal(err.code, 'GW_CONFIG_INVALID');
    assert.equal(err.message, `${missing}: cannot read the config file: no such file`);
    return true;
  });
  writeFileSync(file, 'routes: [{ upstream: api }]\nupstreams:\n  api:\n    servers: [{ address: "127.0.0.1:9000" }]\n');
  const cfg = await loadConfig(file);
  assert.equal(cfg.file, file);
  assert.equal(cfg.upstreams.api.servers[0].address, '127.0.0.1:9000');
});

test('duplicate routes and zero upstream timeouts are rejected', () => {
  const text = `routes:
  - { match: { path_prefix: /api }, upstream: a }
  - { match: { host: x.test, path_prefix: /api }, upstream: a }
  - { match: { path_prefix: /api }, upstream: a, strip_prefix: true }
  - { upstream: a }
  - { upstream: a }
upstreams:
  a:
    timeouts: { connect: 0, read: 0s }
    servers: [{ address: "127.0.0.1:9000" }]
`;
  assert.deepEqual(problemsOf(text), [
    'gatewire.yaml:4:14: routes[2].match: same host and path_prefix as routes[0], so it would never match (remove it or change its match)',
    'gatewire.yaml:6:5: routes[4].match: same host and path_prefix as routes[3], so it would never match (remove it or change its match)',
    'gatewire.yaml:9:26: upstreams.a.timeouts.connect: must be more than 0 (e.g. "60s")',
    'gatewire.yaml:9:35: upstreams.a.timeouts.read: must be more than 0 (e.g. "60s")',
  ]);
});
