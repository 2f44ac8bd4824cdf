// SIGHUP re-reads the config while requests keep coming: not one request is
// lost, requests in flight finish on the old upstream, new ones use the new
// one; an invalid config is reported and the running one kept.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { test } from 'node:test';
import { call, countBy, startAppserver, startProxy } from './helpers/proxy-harness.ts';

test('SIGHUP reload under load loses no request; a bad config keeps the running one', { timeout: 90000 }, async (t) => {
  const [a, b] = await Promise.all([startAppserver(t, 'A'), startAppserver(t, 'B')]);
  const proxy = await startProxy(t, { upstreams: { app: { servers: [a.address] } } });

  let stop = false;
  const results: Array<{ status: number; name: string; at: number }> = [];
  const worker = async () => {
    while (!stop) {
      const r = await call(`${proxy.url}/slow?ms=30`).catch((err: Error) => ({ status: 0, text: err.message }));
      results.push({ status: r.status, name: r.text, at: Date.now() });
    }
  };
  const workers = Array.from({ length: 8 }, worker);
  // a long request that starts before the reload must finish on A
  const longOnA = call(`${proxy.url}/slow?ms=2500`);
  await new Promise((r) => setTimeout(r, 800));

  proxy.rewrite({ upstreams: { app: { servers: [b.address] } } });
  proxy.proc.kill('SIGHUP');
  await proxy.proc.waitFor(/configuration reloaded/, 10000);
  const reloadedAt = Date.now();
  await new Promise((r) => setTimeout(r, 1500));

  writeFileSync(proxy.configFile, '{ "listen": { "port": "not a port" }, ');
  proxy.proc.kill('SIGHUP');
  await proxy.proc.waitFor(/reload failed, keeping the running configuration/, 10000);
  await new Promise((r) => setTimeout(r, 800));
  stop = true;
  await Promise.all(workers);

  const long = await longOnA;
  assert.deepEqual([long.status, long.text], [200, 'A'], 'the in-flight request finished on the old upstream');
  const statuses = countBy(results.map((r) => r.status));
  assert.deepEqual([...statuses.keys()], [200], `statuses ${JSON.stringify([...statuses])}`);
  assert.ok(results.length > 50, `${results.length} requests`);
  const afterReload = results.filter((r) => r.at > reloadedAt + 200);
  assert.ok(afterReload.length > 10);
  assert.deepEqual([...new Set(afterReload.map((r) => r.name))], ['B'], 'new requests use the new config, also after the failed reload');
  assert.ok(results.some((r) => r.name === 'A'));
  assert.match(proxy.proc.output(), /gatewire\.json/, 'the failed reload names the file');
});
