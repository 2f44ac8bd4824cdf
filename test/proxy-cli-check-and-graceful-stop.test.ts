// `gatewire proxy --check` validates like nginx -t (exit 0/1, one line per
// problem), and SIGTERM stops gracefully: the request in flight completes and
// the process exits 0.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { freePort, tempDir } from './helpers/net.ts';
import { startGatewire } from './helpers/procs.ts';
import { call, startAppserver, startProxy } from './helpers/proxy-harness.ts';

test('--check: exit 0 and the nginx -t line for a valid file, exit 1 and FILE:LINE:COL problems for a bad one', { timeout: 30000 }, async (t) => {
  const { dir, cleanup } = tempDir('gwc-');
  t.after(cleanup);
  const good = path.join(dir, 'good.yaml');
  writeFileSync(good, 'listen: { host: 127.0.0.1, port: 18081 }\nroutes:\n  - match: { path_prefix: / }\n    upstream: app\nupstreams:\n  app:\n    servers: [{ address: "127.0.0.1:9000" }]\n');
  const ok = startGatewire(['proxy', '--config', good, '--check']);
  assert.equal(await ok.exited, 0, ok.output());
  assert.match(ok.output(), new RegExp(`configuration file ${good.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} test is successful`));

  const bad = path.join(dir, 'bad.yaml');
  writeFileSync(bad, 'routes:\n  - match: { path_prefix: / }\n    upstream: app\nupstreams:\n  app:\n    balance: leastconn\n    servers: [{ address: "127.0.0.1:9000" }]\n');
  const ko = startGatewire(['proxy', '--config', bad, '--check']);
  assert.equal(await ko.exited, 1);
  assert.match(ko.output(), /bad\.yaml:6:14: upstreams\.app\.balance: "leastconn" is not one of/);
  assert.match(ko.output(), /test failed/);
});

test('SIGTERM: the request in flight completes, then the proxy exits 0', { timeout: 60000 }, async (t) => {
  const a = await startAppserver(t, 'A');
  const proxy = await startProxy(t, { upstreams: { app: { servers: [a.address] } } });
  const inflight = call(`${proxy.url}/slow?ms=1500`);
  await new Promise((r) => setTimeout(r, 400));
  proxy.proc.kill('SIGTERM');
  const r = await inflight;
  assert.deepEqual([r.status, r.text], [200, 'A']);
  assert.equal(await proxy.proc.exited, 0, proxy.proc.output());
});

test('`gatewire up` checks apps: with the proxy config schema: every problem FILE:LINE:COL, nothing started', { timeout: 30000 }, async (t) => {
  const { dir, cleanup } = tempDir('gwc-');
  t.after(cleanup);
  const bad = path.join(dir, 'up.yaml');
  writeFileSync(
    bad,
    'apps:\n  - app: examples/hello.ts\n    listen: nowhere\n    worker: 2\nroutes:\n  - upstream: app\nupstreams:\n  app:\n    servers: [{ address: "127.0.0.1:9000" }]\n',
  );
  const up = startGatewire(['up', '--config', bad]);
  assert.notEqual(await up.exited, 0);
  assert.match(up.output(), /up\.yaml:3:13: apps\[0\]\.listen: "nowhere" is not a listen address/);
  assert.match(up.output(), /up\.yaml:4:5: apps\[0\]\.worker: unknown key \(did you mean "workers"\?\)/);
  assert.doesNotMatch(up.output(), /listening/);
});

test('the listen line names the address actually bound: 0.0.0.0, not 127.0.0.1', { timeout: 30000 }, async (t) => {
  const { dir, cleanup } = tempDir('gwc-');
  t.after(cleanup);
  const port = await freePort();
  const file = path.join(dir, 'any.yaml');
  writeFileSync(file, `listen: { host: 0.0.0.0, port: ${port} }\nadmin: false\nroutes:\n  - upstream: app\nupstreams:\n  app:\n    servers: [{ address: "127.0.0.1:9" }]\n`);
  const proxy = startGatewire(['proxy', '--config', file]);
  t.after(() => proxy.stop(5000));
  await proxy.waitFor(/gatewire proxy listening on/, 20000);
  assert.match(proxy.output(), new RegExp(`gatewire proxy listening on http://0\\.0\\.0\\.0:${port}\\n`));
  // the log line is buffered like every log line (flushed within log.flush_interval)
  await proxy.waitFor(new RegExp(`"msg":"listening on http://0\\.0\\.0\\.0:${port}`), 5000);
});
