// limits.rate through real `gatewire proxy` processes: NGINX's limit_req semantics (rate + burst,
// keyed by client address after trust_proxy, a header or a cookie), 429 with Retry-After and the
// IETF draft's RateLimit headers, dry_run; then two proxy processes sharing one zone through a
// real redis-server enforce one limit together, and Redis going away mid-run fails open or closed
// as configured, never crashes a proxy, and the limit is back once Redis is.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { call, startNodeBackend, startProxy } from './helpers/proxy-harness.ts';
import { startRedis } from './helpers/redis.ts';

async function statuses(urls: string[], n: number, headers: Record<string, string> = {}): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push((await call(urls[i % urls.length], { headers })).status);
  return out;
}

test('rate zones in memory: burst then 429 with Retry-After and RateLimit headers; keys; dry_run; trust_proxy', { timeout: 60000 }, async (t) => {
  const app = await startNodeBackend(t, 'app');
  const spec = {
    trust_proxy: ['127.0.0.2'],
    limits: {
      rate: {
        per_ip: { rate: '60r/m', burst: 2 },
        per_key: { key: { header: 'X-Api-Key' }, rate: '60r/m', burst: 1 },
        per_session: { key: { cookie: 'sid' }, rate: '60r/m' },
        watch: { rate: '60r/m', dry_run: true },
        paced: { key: { header: 'X-Pace' }, rate: '10r/s', burst: 5, nodelay: false },
      },
    },
    routes: [
      { match: { path_prefix: '/' }, upstream: 'app', limits: { rate: ['per_ip'] } },
      { match: { path_prefix: '/key' }, upstream: 'app', limits: { rate: ['per_key'] } },
      { match: { path_prefix: '/session' }, upstream: 'app', limits: { rate: ['per_session'] } },
      { match: { path_prefix: '/watched' }, upstream: 'app', limits: { rate: ['watch'] } },
      { match: { path_prefix: '/free' }, upstream: 'app' },
      { match: { path_prefix: '/paced' }, upstream: 'app', limits: { rate: ['paced'] } },
    ],
    upstreams: { app: { protocol: 'http' as const, servers: [app.address] } },
  };
  const proxy = await startProxy(t, spec);

  const first = await call(`${proxy.url}/a`);
  assert.equal(first.status, 200);
  assert.equal(first.headers['ratelimit-policy'], '"per_ip";q=60;w=60;burst=2');
  assert.equal(first.headers.ratelimit, '"per_ip";r=2;t=1');
  assert.deepEqual(await statuses([`${proxy.url}/a`], 3), [200, 200, 429], 'rate + burst pass, the next is refused');
  const refused = await call(`${proxy.url}/a`);
  assert.equal(refused.status, 429);
  assert.equal(refused.headers['retry-after'], '1');
  assert.equal(refused.headers.ratelimit, '"per_ip";r=0;t=1');
  assert.equal((await call(`${proxy.url}/a`, { from: '127.0.0.3' })).status, 200, 'another client address has its own bucket');
  assert.equal((await call(`${proxy.url}/free`)).status, 200, 'a route without the zone is not limited');

  // behind a trusted proxy (127.0.0.2) the client is the X-Forwarded-For entry it appended...
  const viaTrusted = await call(`${proxy.url}/a`, { from: '127.0.0.2', headers: { 'x-forwarded-for': '203.0.113.9' } });
  assert.equal(viaTrusted.status, 200, 'a fresh client behind the trusted proxy');
  // ...while an untrusted peer's own X-Forwarded-For changes nothing (127.0.0.1 is still limited)
  assert.equal((await call(`${proxy.url}/a`, { headers: { 'x-forwarded-for': '203.0.113.10' } })).status, 429);

  assert.deepEqual(await statuses([`${proxy.url}/key/x`], 3, { 'x-api-key': 'alice' }), [200, 200, 429]);
  assert.deepEqual(await statuses([`${proxy.url}/key/x`], 2, { 'x-api-key': 'bob' }), [200, 200]);
  assert.deepEqual(await statuses([`${proxy.url}/key/x`], 4), [200, 200, 200, 200], 'no key, no limit (as NGINX with an empty key)');
  assert.deepEqual(await statuses([`${proxy.url}/session`], 2, { cookie: 'a=1; sid=s1' }), [200, 429]);
  assert.deepEqual(await statuses([`${proxy.url}/watched`], 4), [200, 200, 200, 200], 'dry_run only counts');

  await new Promise((r) => setTimeout(r, 1100));
  assert.equal((await call(`${proxy.url}/a`)).status, 200, 'one request per second drips back in');

  // nodelay: false (NGINX's limit_req without nodelay): the burst passes at the rate, the rest is refused
  const start = Date.now();
  const paced = await Promise.all(
    Array.from({ length: 8 }, async () => {
      const r = await call(`${proxy.url}/paced`, { headers: { 'x-pace': 'p1' } });
      return { status: r.status, ms: Date.now() - start };
    }),
  );
  assert.deepEqual(paced.map((p) => p.status).sort(), [200, 200, 200, 200, 200, 200, 429, 429]);
  const passedAt = paced.filter((p) => p.status === 200).map((p) => p.ms);
  assert.ok(Math.max(...passedAt) >= 450, `the sixth request went out ~500 ms after the first (at ${Math.max(...passedAt)} ms)`);
  assert.ok(Math.max(...paced.filter((p) => p.status === 429).map((p) => p.ms)) < Math.max(...passedAt), 'refusals are not delayed');

  // a reload that leaves a zone unchanged keeps its counts, as NGINX keeps its zones
  assert.deepEqual(await statuses([`${proxy.url}/key/x`], 2, { 'x-api-key': 'carol' }), [200, 200]);
  proxy.rewrite(spec);
  proxy.proc.kill('SIGHUP');
  await proxy.proc.waitFor(/configuration reloaded/, 10000);
  assert.equal((await call(`${proxy.url}/key/x`, { headers: { 'x-api-key': 'carol' } })).status, 429);

  const metrics = (await call(`${proxy.admin}/metrics`)).text;
  assert.match(metrics, /gatewire_rate_limit_requests_total\{zone="per_ip",outcome="rejected"\} [2-9]/);
  assert.match(metrics, /gatewire_rate_limit_requests_total\{zone="watch",outcome="dry_run_rejected"\} 3/);
  assert.match(metrics, /gatewire_rate_limit_requests_total\{zone="paced",outcome="delayed"\} 5/);
  await proxy.proc.waitFor(/"msg":"rate limited"/, 5000); // refusals are logged (the log is buffered, flushed every second)
});

test('two proxy processes share one zone through redis-server; Redis away fails open or closed, then recovers', { timeout: 90000 }, async (t) => {
  const redis = await startRedis(t);
  const app = await startNodeBackend(t, 'app');
  const spec = (onError: 'allow' | 'deny') => ({
    limits: {
      store: { redis: redis.url, on_store_error: onError, timeout: '2s', prefix: `gw-test-${process.pid}:` },
      rate: { shared: { key: { header: 'X-Client' }, rate: '10r/m', burst: 4 } },
    },
    routes: [{ match: { path_prefix: '/' }, upstream: 'app', limits: { rate: ['shared'] } }],
    upstreams: { app: { protocol: 'http' as const, servers: [app.address] } },
  });
  const a = await startProxy(t, spec('allow'));
  const b = await startProxy(t, spec('deny'));
  const both = [`${a.url}/x`, `${b.url}/x`];
  const waitForStore = async (url: string) => {
    for (let i = 0; i < 100; i++) {
      const r = await call(url, { headers: { 'x-client': `probe-${i}` } });
      if (r.headers['ratelimit-policy'] !== undefined) return;
      await new Promise((res) => setTimeout(res, 100));
    }
    throw new Error(`${url} never reached Redis`);
  };
  await waitForStore(both[0]);
  await waitForStore(both[1]);

  // 5 = 1 + burst 4 per minute, alternating between the two processes: one budget, not two
  const shared = await statuses(both, 8, { 'x-client': 'c1' });
  assert.deepEqual(shared, [200, 200, 200, 200, 200, 429, 429, 429]);

  await redis.stop();
  const whileDown = await Promise.all([call(both[0], { headers: { 'x-client': 'c1' } }), call(both[1], { headers: { 'x-client': 'c1' } })]);
  assert.equal(whileDown[0].status, 200, 'on_store_error: allow passes the request');
  assert.equal(whileDown[0].headers['ratelimit-policy'], undefined);
  assert.equal(whileDown[1].status, 503, 'on_store_error: deny refuses it');
  assert.equal(whileDown[1].headers['retry-after'], '1');
  const metricsDown = (await call(`${a.admin}/metrics`)).text;
  assert.match(metricsDown, /gatewire_limit_store_errors_total\{store="redis",action="allow"\} [1-9]/);
  await a.proc.waitFor(/rate limit store failed/, 5000); // the log is buffered, flushed every second

  await redis.start();
  await waitForStore(both[0]);
  await waitForStore(both[1]);
  // the new Redis is empty: a fresh budget, enforced by both together again
  assert.deepEqual(await statuses(both, 7, { 'x-client': 'c2' }), [200, 200, 200, 200, 200, 429, 429]);
  assert.equal(a.proc.child.exitCode, null, 'proxy a still running');
  assert.equal(b.proc.child.exitCode, null, 'proxy b still running');
});
