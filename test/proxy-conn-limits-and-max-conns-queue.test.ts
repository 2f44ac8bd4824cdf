// limits.conn (NGINX limit_conn) and servers[].max_conns with the upstream queue (NGINX's
// max_conns= and NGINX Plus `queue`) through a real `gatewire proxy`: requests over a limit wait
// in a bounded queue up to its timeout, then get 503; the server never sees more than max_conns;
// queue depth, waits and refusals are in /metrics.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { call, startNodeBackend, startProxy } from './helpers/proxy-harness.ts';

async function timed(url: string, opts: { from?: string } = {}): Promise<{ status: number; ms: number; body: string }> {
  const start = Date.now();
  const r = await call(url, opts);
  return { status: r.status, ms: Date.now() - start, body: r.text };
}

test('limits.conn: one request per client at a time, a short queue, then 503', { timeout: 60000 }, async (t) => {
  const app = await startNodeBackend(t, 'app');
  const proxy = await startProxy(t, {
    limits: {
      conn: {
        one_at_a_time: { max: 1 },
        queued: { max: 1, queue: 1, queue_timeout: '3s' },
        impatient: { max: 1, queue: 1, queue_timeout: '300ms' },
      },
    },
    routes: [
      { match: { path_prefix: '/strict' }, upstream: 'app', strip_prefix: true, limits: { conn: ['one_at_a_time'] } },
      { match: { path_prefix: '/queued' }, upstream: 'app', strip_prefix: true, limits: { conn: ['queued'] } },
      { match: { path_prefix: '/impatient' }, upstream: 'app', strip_prefix: true, limits: { conn: ['impatient'] } },
    ],
    upstreams: { app: { protocol: 'http', servers: [app.address] } },
  });
  const u = proxy.url;

  // no queue: the second concurrent request of the same client is refused at once
  const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const strict = await Promise.all([timed(`${u}/strict/slow?ms=800`), delay(150).then(() => timed(`${u}/strict/slow?ms=10`))]);
  assert.equal(strict[0].status, 200);
  assert.equal(strict[1].status, 503);
  assert.ok(strict[1].ms < 500, `refused at once, took ${strict[1].ms} ms`);
  // another client address is another key
  const other = await Promise.all([timed(`${u}/strict/slow?ms=500`), timed(`${u}/strict/slow?ms=10`, { from: '127.0.0.4' })]);
  assert.deepEqual(
    other.map((r) => r.status),
    [200, 200],
  );

  // queue of one: the second waits for the first and is served; the third finds the queue full
  const queued = await Promise.all([
    timed(`${u}/queued/slow?ms=800`),
    delay(100).then(() => timed(`${u}/queued/slow?ms=10`)),
    delay(200).then(() => timed(`${u}/queued/slow?ms=10`)),
  ]);
  assert.deepEqual(
    queued.map((r) => r.status),
    [200, 200, 503],
  );
  assert.ok(queued[1].ms >= 500, `the queued request waited for the first (${queued[1].ms} ms)`);

  // a wait longer than queue_timeout ends in 503
  const impatient = await Promise.all([timed(`${u}/impatient/slow?ms=1500`), delay(100).then(() => timed(`${u}/impatient/slow?ms=10`))]);
  assert.equal(impatient[0].status, 200);
  assert.equal(impatient[1].status, 503);
  assert.ok(impatient[1].ms >= 250 && impatient[1].ms < 1300, `gave up after the 300 ms queue timeout (${impatient[1].ms} ms)`);

  const metrics = (await call(`${proxy.admin}/metrics`)).text;
  assert.match(metrics, /gatewire_conn_limit_rejected_total\{limit="one_at_a_time"\} [1-9]/);
  assert.match(metrics, /gatewire_conn_limit_queue_wait_seconds_count\{limit="queued",outcome="admitted"\} [1-9]/);
  assert.match(metrics, /gatewire_conn_limit_queue_wait_seconds_count\{limit="impatient",outcome="timeout"\} 1/);
  assert.match(metrics, /gatewire_conn_limit_queue_depth\{limit="queued"\} 0/);
});

test('servers[].max_conns: the server never gets more than its share; the upstream queue waits, then 503', { timeout: 60000 }, async (t) => {
  const app = await startNodeBackend(t, 'app');
  const proxy = await startProxy(t, {
    upstreams: {
      app: { protocol: 'http', servers: [{ address: app.address, max_conns: 1 }], queue: { size: 3, timeout: '5s' } },
      tight: { protocol: 'http', servers: [{ address: app.address, max_conns: 1 }] },
    },
    routes: [
      { match: { path_prefix: '/' }, upstream: 'app' },
      { match: { path_prefix: '/tight' }, upstream: 'tight', strip_prefix: true },
    ],
  });
  // three at once through a server limited to one: served one after the other
  const start = Date.now();
  const served = await Promise.all([0, 1, 2].map(() => timed(`${proxy.url}/slow?ms=400`)));
  assert.deepEqual(
    served.map((r) => r.status),
    [200, 200, 200],
  );
  const finished = served.map((r) => r.ms).sort((x, y) => x - y);
  assert.ok(finished[2] >= 1100 && Date.now() - start >= 1100, `one at a time: finished after ${finished.join(', ')} ms`);

  // no queue: the second concurrent request gets 503 at once (NGINX: no server available)
  const tight = await Promise.all([timed(`${proxy.url}/tight/slow?ms=500`), new Promise((r) => setTimeout(r, 100)).then(() => timed(`${proxy.url}/tight/slow?ms=10`))]);
  assert.deepEqual(
    tight.map((r) => r.status),
    [200, 503],
  );

  const metrics = (await call(`${proxy.admin}/metrics`)).text;
  assert.match(metrics, /gatewire_conn_limit_queue_wait_seconds_count\{limit="upstream:app",outcome="admitted"\} 2/);
});
