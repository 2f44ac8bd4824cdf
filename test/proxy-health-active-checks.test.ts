// Active health checks: `fall` consecutive failed probes take a host out of
// rotation, `rise` consecutive good ones bring it back; transitions are logged and
// counted in the metrics; timers stop on stop().
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { HealthChecker, type Probe } from '../proxy/healthchecks.ts';
import type { Host } from '../proxy/hosts.ts';
import { ProxyMetrics } from '../proxy/metrics.ts';
import { UpstreamPool } from '../proxy/upstreams.ts';
import { ctx, letter, recordingLogger, upstreamConfig } from './helpers/proxy-pool.ts';

const hc = (over: Partial<{ interval_ms: number; timeout_ms: number; rise: number; fall: number; expect_status: number[] }> = {}) => ({
  path: '/healthz',
  interval_ms: 60_000,
  timeout_ms: 200,
  rise: 2,
  fall: 3,
  ...over,
});

/** A probe answering from a per-host script of statuses (or 'error' / 'hang'); records its calls. */
function scriptedProbe(script: Record<string, Array<number | 'error' | 'hang'>>) {
  const calls: string[] = [];
  const probe: Probe = async (host, path, timeoutMs) => {
    calls.push(`${letter(host)} ${path} ${timeoutMs}`);
    const next = script[letter(host)]?.shift() ?? 200;
    if (next === 'error') throw Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    if (next === 'hang') return new Promise<number>(() => {});
    return next;
  };
  return { probe, calls };
}

test('a success in between resets the count: only fall failures in a row take a host down', async (t) => {
  const pool = new UpstreamPool(upstreamConfig({ health_check: hc(), servers: [{ address: 'a:1' }, { address: 'b:1' }] }), { logger: recordingLogger() });
  const { probe, calls } = scriptedProbe({ a: [500, 'error', 200, 503, 'error', 200, 'error', 'error', 'error'] });
  const checker = new HealthChecker(pool, probe);
  t.after(() => checker.stop());
  await checker.start(); // 500
  const a = pool.hosts[0];
  const states: string[] = [];
  for (let i = 0; i < 8; i++) {
    await checker.checkAll();
    states.push(a.healthy ? 'up' : 'down');
  }
  // error, 200, 503, error, 200, error, error, error (then the script is out: 200)
  assert.deepEqual(states, ['up', 'up', 'up', 'up', 'up', 'up', 'up', 'down']);
  assert.deepEqual(calls.slice(0, 2), ['a /healthz 200', 'b /healthz 200']);
  assert.equal(pool.hosts[1].healthy, true);
});

test('a started checker: three failures down, two successes up, hung probes time out, draining hosts are skipped', async (t) => {
  const pool = new UpstreamPool(upstreamConfig({ health_check: hc({ rise: 2, fall: 3, timeout_ms: 100 }), servers: [{ address: 'a:1' }, { address: 'b:1' }] }), {
    logger: recordingLogger(),
  });
  const logger = recordingLogger();
  const metrics = new ProxyMetrics({ defaultMetrics: false });
  const { probe, calls } = scriptedProbe({ a: [200, 500, 'error', 'hang', 200, 200], b: [] });
  const checker = new HealthChecker(pool, probe, { logger, metrics });
  t.after(() => checker.stop());
  await checker.start(); // round 1: a 200
  const [a, b] = pool.hosts;
  await checker.checkAll(); // 500
  await checker.checkAll(); // error
  assert.equal(a.healthy, true);
  await checker.checkAll(); // hang → timed out
  assert.equal(a.healthy, false, 'three failures in a row');
  assert.equal(checker.stateOf(a)?.lastError, 'GW_UPSTREAM_TIMEOUT');
  for (let i = 0; i < 5; i++) assert.equal(pool.select(ctx()), b, 'unhealthy a is out of rotation');
  await checker.checkAll(); // 200
  assert.equal(a.healthy, false, 'one success is not rise: 2');
  await checker.checkAll(); // 200
  assert.equal(a.healthy, true);
  assert.deepEqual(
    logger.lines.map((l) => `${l.level} ${l.obj.host} ${l.msg}`),
    ['warn a:1 upstream server failed its health checks; taken out of rotation', 'info a:1 upstream server is healthy again'],
  );
  const text = await metrics.text();
  assert.match(text, /gatewire_upstream_host_up\{upstream="app",host="a:1"\} 1/);
  assert.match(text, /gatewire_upstream_health_transitions_total\{upstream="app",host="a:1",to="down"\} 1/);
  assert.match(text, /gatewire_upstream_health_transitions_total\{upstream="app",host="a:1",to="up"\} 1/);
  b.draining = true;
  const before = calls.length;
  await checker.checkAll();
  assert.deepEqual(calls.slice(before), ['a /healthz 100'], 'draining b is not probed');
});

test('expect_status: only the listed statuses pass; default is 2xx and 3xx', async (t) => {
  const mk = (expect?: number[]) => {
    const pool = new UpstreamPool(upstreamConfig({ health_check: hc({ fall: 1, rise: 1, ...(expect ? { expect_status: expect } : {}) }), servers: [{ address: 'a:1' }] }), {
      logger: recordingLogger(),
    });
    return pool;
  };
  const results: string[] = [];
  for (const [expect, status] of [
    [undefined, 200],
    [undefined, 302],
    [undefined, 404],
    [[204], 200],
    [[204], 204],
  ] as const) {
    const pool = mk(expect ? [...expect] : undefined);
    const checker = new HealthChecker(pool, async () => status);
    t.after(() => checker.stop());
    await checker.start();
    results.push(`${expect ?? 'default'} ${status} ${pool.hosts[0].healthy ? 'up' : 'down'}`);
  }
  assert.deepEqual(results, ['default 200 up', 'default 302 up', 'default 404 down', '204 200 down', '204 204 up']);
});

test('the interval timer probes repeatedly and stops on stop(); no health_check → nothing runs', async () => {
  const pool = new UpstreamPool(upstreamConfig({ health_check: hc({ interval_ms: 20 }), servers: [{ address: 'a:1' }] }), { logger: recordingLogger() });
  let probes = 0;
  const checker = new HealthChecker(pool, async () => {
    probes++;
    return 200;
  });
  checker.start();
  const deadline = Date.now() + 10_000;
  while (probes < 4 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.ok(probes >= 4, `probes: ${probes}`);
  checker.stop();
  await new Promise((r) => setTimeout(r, 30));
  const after = probes;
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(probes, after, 'no probe after stop()');

  const quiet = new UpstreamPool(upstreamConfig({ servers: [{ address: 'a:1' }] }), { logger: recordingLogger() });
  let called = 0;
  const none = new HealthChecker(quiet, async () => {
    called++;
    return 200;
  });
  await none.start();
  await none.checkAll();
  none.stop();
  assert.equal(called, 0);
});

/** The simple HTTP probe a test can write: GET path, resolve with the status. */
const httpProbe: Probe = (host: Host, path: string, timeoutMs: number) =>
  new Promise((resolve, reject) => {
    const t = host.target;
    if (t.kind !== 'tcp') return reject(new Error('tcp only'));
    const req = http.get({ host: t.host, port: t.port, path, agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('probe timeout'), { code: 'GW_UPSTREAM_TIMEOUT' })));
    req.on('error', reject);
  });

test('against a real node:http server: 503s and a closed port take it out, 200s bring it back', { timeout: 60_000 }, async (t) => {
  let status = 200;
  const seen: string[] = [];
  const server = http.createServer((req, res) => {
    seen.push(req.url ?? '');
    res.statusCode = status;
    res.end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  t.after(() => new Promise((r) => server.close(r)));
  const pool = new UpstreamPool(
    upstreamConfig({
      health_check: { path: '/health?deep=1', interval_ms: 50, timeout_ms: 1000, rise: 2, fall: 2 },
      servers: [{ address: `127.0.0.1:${port}` }, { address: '127.0.0.1:1' /* never listening: refused */ }],
    }),
    { logger: recordingLogger() },
  );
  const metrics = new ProxyMetrics({ defaultMetrics: false });
  const checker = new HealthChecker(pool, httpProbe, { metrics, logger: recordingLogger() });
  t.after(() => checker.stop());
  const [up, refused] = pool.hosts;
  const until = async (cond: () => boolean, what: string) => {
    const deadline = Date.now() + 20_000;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  checker.start();
  await until(() => !refused.healthy, 'the refused server to go down');
  assert.equal(up.healthy, true);
  assert.equal(seen[0], '/health?deep=1');
  status = 503;
  await until(() => !up.healthy, 'the 503 server to go down');
  assert.equal(pool.select(ctx()), null, 'no healthy server');
  status = 200;
  await until(() => up.healthy, 'the server to come back');
  assert.equal(pool.select(ctx()), up);
  assert.match(await metrics.text(), /gatewire_upstream_host_up\{upstream="app",host="127\.0\.0\.1:1"\} 0/);
});

test('a host DNS adds later joins an upstream with health_check only after `rise` good probes; the first records are trusted', async (t) => {
  let records = ['10.0.0.1'];
  const pool = new UpstreamPool(upstreamConfig({ health_check: hc({ rise: 2 }), servers: [{ address: 'app.internal:9000', resolve: true }] }), {
    logger: recordingLogger(),
    resolver: async () => records,
  });
  t.after(() => pool.stop());
  const seen: string[] = [];
  const probe: Probe = async (host) => {
    seen.push(host.address);
    return 200;
  };
  const checker = new HealthChecker(pool, probe);
  t.after(() => checker.stop());
  await pool.start();
  assert.equal(pool.hosts[0].healthy, true, 'the first resolution is trusted, as static servers are');
  await checker.start();
  // scale up: the new replica may not listen yet
  records = ['10.0.0.1', '10.0.0.2'];
  await pool.reresolve();
  await new Promise((r) => setTimeout(r, 1100)); // reresolve is rate-limited to one per second
  await pool.reresolve();
  const added = pool.hosts.find((h) => h.address === '10.0.0.2:9000');
  assert.ok(added, 'DNS added the host');
  for (let i = 0; i < 5; i++) assert.equal(pool.select(ctx())?.address, '10.0.0.1:9000', 'no traffic before it passed its checks');
  await new Promise((r) => setTimeout(r, 20));
  assert.ok(seen.includes('10.0.0.2:9000'), 'probed at once when it appeared');
  await checker.checkAll();
  assert.equal(added.healthy, true, 'healthy after rise (2) good probes');
  const picks = new Set(Array.from({ length: 4 }, () => pool.select(ctx())?.address));
  assert.ok(picks.has('10.0.0.2:9000'));
});
