// With workers: 3, what concerns each upstream server once happens once for
// the group, in the master, not once per worker: active health probes reach
// each server once per interval (counted at the server), a server failing them
// leaves the rotation of every worker and comes back to all, and a
// `resolve: true` name is queried once per interval (counted at a real
// dnsmasq) while every worker forwards to its records.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { type TestContext, test } from 'node:test';
import { startDnsmasq } from './helpers/proxy-dnsmasq.ts';
import { call, startProxy } from './helpers/proxy-harness.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A plain HTTP backend in this process that counts health probes; /healthz fails while `failing`. */
async function countingBackend(t: TestContext, name: string) {
  const state = { probes: 0, failing: false };
  const server = http.createServer((req, res) => {
    if (req.url === '/healthz') {
      state.probes++;
      res.statusCode = state.failing ? 500 : 200;
      res.end(state.failing ? 'failing' : 'ok');
      return;
    }
    res.end(name);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  return { state, port: (server.address() as AddressInfo).port };
}

/** One request on a new connection, so that the kernel spreads them over the workers. */
async function fresh(url: string): Promise<number> {
  const res = await fetch(url, { headers: { connection: 'close' } });
  await res.arrayBuffer();
  return res.status;
}

test('health probes reach each server once per interval, whatever the number of workers; their verdict reaches every worker', { timeout: 90_000 }, async (t) => {
  const a = await countingBackend(t, 'A');
  const b = await countingBackend(t, 'B');
  const proxy = await startProxy(t, {
    workers: 3,
    log: { level: 'info', access: false },
    upstreams: {
      app: {
        protocol: 'http',
        servers: [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`],
        health_check: { path: '/healthz', interval: '500ms', timeout: '400ms', rise: 1, fall: 1 },
      },
    },
  });
  await proxy.proc.waitFor(/gatewire proxy listening on .* \(3 workers\)/, 30_000);
  await sleep(500);
  const start = { a: a.state.probes, b: b.state.probes };
  await sleep(4000);
  const probesA = a.state.probes - start.a;
  const probesB = b.state.probes - start.b;
  t.diagnostic(`in 4 s at a 500 ms interval: ${probesA} probes at A, ${probesB} at B (3 workers)`);
  // 8 expected; one checker per worker would make 24
  for (const n of [probesA, probesB]) assert.ok(n >= 5 && n <= 10, `${n} probes in 4 s`);

  // A fails its checks: no worker sends it anything; it recovers: every worker uses it again
  a.state.failing = true;
  await sleep(1500);
  const whileDown = await Promise.all(Array.from({ length: 30 }, () => call(`${proxy.url}/`).then((r) => r.text)));
  assert.deepEqual([...new Set(whileDown)], ['B']);
  const spread = await Promise.all(Array.from({ length: 30 }, () => fresh(`${proxy.url}/`)));
  assert.deepEqual([...new Set(spread)], [200]);
  a.state.failing = false;
  await sleep(1500);
  const names = new Set<string>();
  for (let i = 0; i < 30; i++) names.add((await call(`${proxy.url}/`)).text);
  assert.deepEqual([...names].sort(), ['A', 'B']);
  const status = await call(`${proxy.admin}/status`).then((r) => r.json<{ upstreams: Array<{ hosts: Array<{ address: string; healthy: boolean }> }> }>());
  assert.ok(status.upstreams[0].hosts.every((h) => h.healthy));
  const metrics = (await call(`${proxy.admin}/metrics`)).text;
  // the master's checker is the one that counts (at least the transition caused here; a probe
  // timing out on a loaded machine may add more)
  const down = new RegExp(`gatewire_upstream_health_transitions_total\\{upstream="app",host="127.0.0.1:${a.port}",to="down"\\} (\\d+)\\n`).exec(metrics);
  assert.ok(down && Number(down[1]) >= 1, `no down transition of A in /metrics:\n${metrics.split('\n').filter((l) => l.includes('health')).join('\n')}`);
});

test('a resolve: true name is queried once per interval for the group, and every worker forwards to its records', { timeout: 90_000 }, async (t) => {
  const a = await countingBackend(t, 'A');
  const dns = await startDnsmasq(['127.0.0.1 app.test']);
  t.after(() => dns.stop());
  const proxy = await startProxy(t, {
    workers: 3,
    log: { level: 'info', access: false },
    resolver: { servers: [dns.server], interval: '500ms' },
    upstreams: { app: { protocol: 'http', servers: [{ address: `app.test:${a.port}`, resolve: true }] } },
  });
  await proxy.proc.waitFor(/gatewire proxy listening on .* \(3 workers\)/, 30_000);
  const queries = () => (dns.proc.output().match(/query\[A\] app\.test/g) ?? []).length;
  await sleep(500);
  const before = queries();
  await sleep(4000);
  const n = queries() - before;
  t.diagnostic(`${n} A queries for app.test in 4 s at a 500 ms interval (3 workers)`);
  // 8 expected; a resolver per worker would make 24
  assert.ok(n >= 5 && n <= 10, `${n} queries in 4 s`);
  const statuses = await Promise.all(Array.from({ length: 30 }, () => fresh(`${proxy.url}/`)));
  assert.deepEqual([...new Set(statuses)], [200]);
});
