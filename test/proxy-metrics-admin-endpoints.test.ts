// The admin server answers /metrics (Prometheus text from the proxy's own registry),
// /status (JSON from the status callback) and /healthz, on loopback only by default.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { register as globalRegistry } from 'prom-client';
import { startAdmin } from '../proxy/admin.ts';
import { ProxyMetrics } from '../proxy/metrics.ts';
import { UpstreamPool } from '../proxy/upstreams.ts';
import { recordingLogger, upstreamConfig } from './helpers/proxy-pool.ts';

test('metrics: requests by route/upstream/status, durations, retries, health, connections, streams, bytes', async () => {
  const m = new ProxyMetrics();
  m.requestFinished('/api', 'api', 200, 0.012, 100, 2048);
  m.requestFinished('/api', 'api', 200, 0.02, 0, 10);
  m.requestFinished('/api', 'api', 502, 0.001, 0, 11);
  m.upstreamRequest('api', '127.0.0.1:9000', 0.01, 'ok');
  m.upstreamRequest('api', '127.0.0.1:9001', 2, 'timeout');
  m.retry('api');
  m.setHostHealth('api', '127.0.0.1:9001', false);
  m.connections.inc();
  m.connections.inc();
  m.upstreamStreams.inc({ upstream: 'api', host: '127.0.0.1:9000' });
  const text = await m.text();
  const expectLines = [
    'gatewire_http_requests_total{route="/api",upstream="api",status="200"} 2',
    'gatewire_http_requests_total{route="/api",upstream="api",status="502"} 1',
    'gatewire_http_request_duration_seconds_count{route="/api",upstream="api"} 3',
    'gatewire_http_request_duration_seconds_bucket{le="0.025",route="/api",upstream="api"} 3',
    'gatewire_http_request_duration_seconds_bucket{le="0.01",route="/api",upstream="api"} 1',
    'gatewire_upstream_request_duration_seconds_count{upstream="api",host="127.0.0.1:9001",outcome="timeout"} 1',
    'gatewire_upstream_retries_total{upstream="api"} 1',
    'gatewire_upstream_host_up{upstream="api",host="127.0.0.1:9001"} 0',
    'gatewire_connections_open 2',
    'gatewire_upstream_streams{upstream="api",host="127.0.0.1:9000"} 1',
    'gatewire_http_request_bytes_total{route="/api",upstream="api"} 100',
    'gatewire_http_response_bytes_total{route="/api",upstream="api"} 2069',
  ];
  for (const line of expectLines) assert.ok(text.split('\n').includes(line), `missing: ${line}`);
  assert.match(text, /^process_cpu_user_seconds_total \d/m, 'default process metrics');
  assert.match(text, /^nodejs_eventloop_lag_seconds /m);
  m.removeHost('api', '127.0.0.1:9001');
  assert.doesNotMatch(await m.text(), /host_up\{upstream="api",host="127\.0\.0\.1:9001"\}/);
  // Its own registry: nothing leaks into prom-client's global one, and two instances coexist.
  assert.doesNotMatch(await globalRegistry.metrics(), /gatewire_/);
  const other = new ProxyMetrics();
  assert.doesNotMatch(await other.text(), /gatewire_http_requests_total\{/);
});

test('admin server: GET /metrics, /status and /healthz on 127.0.0.1', { timeout: 30_000 }, async (t) => {
  const metrics = new ProxyMetrics();
  metrics.requestFinished('/', 'web', 204, 0.003, 0, 0);
  const pool = new UpstreamPool(upstreamConfig({ name: 'web', servers: [{ address: '127.0.0.1:9000' }, { address: 'unix:/tmp/w.sock', backup: true }] }), {
    logger: recordingLogger(),
  });
  pool.hosts[0].acquire();
  const admin = await startAdmin({ host: '127.0.0.1', port: 0, metrics, status: () => ({ pools: [pool.snapshot()] }) });
  t.after(() => admin.close());
  assert.match(admin.address, /^127\.0\.0\.1:\d+$/);
  const base = `http://${admin.address}`;

  const m = await fetch(`${base}/metrics`);
  assert.equal(m.status, 200);
  assert.match(m.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  assert.match(await m.text(), /gatewire_http_requests_total\{route="\/",upstream="web",status="204"\} 1/);

  const s = await fetch(`${base}/status`);
  assert.equal(s.status, 200);
  assert.match(s.headers.get('content-type') ?? '', /application\/json/);
  const body = (await s.json()) as { pools: Array<{ name: string; hosts: Array<Record<string, unknown>> }> };
  assert.equal(body.pools[0].name, 'web');
  assert.deepEqual(
    body.pools[0].hosts.map((h) => [h.address, h.inflight, h.backup, h.healthy, h.available]),
    [
      ['127.0.0.1:9000', 1, false, true, true],
      ['unix:/tmp/w.sock', 0, true, true, true],
    ],
  );

  const h = await fetch(`${base}/healthz`);
  assert.equal(h.status, 200);
  assert.equal(await h.text(), 'ok');

  const missing = await fetch(`${base}/nope`);
  assert.equal(missing.status, 404);
  await missing.text();
});
