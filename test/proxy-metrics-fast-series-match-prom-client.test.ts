// ProxyMetrics updates its per-request series in place (proxy/metrics.ts): the exposition must be
// exactly what prom-client's own inc()/observe() would have produced for the same calls, including
// after a reset() of a metric.
import assert from 'node:assert/strict';
import test from 'node:test';
import { Counter, Histogram, Registry } from 'prom-client';
import { ProxyMetrics } from '../proxy/metrics.ts';

const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

function reference() {
  const registry = new Registry();
  const registers = [registry];
  const requests = new Counter({ name: 'gatewire_http_requests_total', help: 'h', labelNames: ['route', 'upstream', 'status'], registers });
  const duration = new Histogram({ name: 'gatewire_http_request_duration_seconds', help: 'h', labelNames: ['route', 'upstream'], buckets: BUCKETS, registers });
  const up = new Histogram({ name: 'gatewire_upstream_request_duration_seconds', help: 'h', labelNames: ['upstream', 'host', 'outcome'], buckets: BUCKETS, registers });
  const bytesIn = new Counter({ name: 'gatewire_http_request_bytes_total', help: 'h', labelNames: ['route', 'upstream'], registers });
  const bytesOut = new Counter({ name: 'gatewire_http_response_bytes_total', help: 'h', labelNames: ['route', 'upstream'], registers });
  return { registry, requests, duration, up, bytesIn, bytesOut };
}

/** The metric's values as prom-client reports them, sorted (label order and values included). */
async function values(metric: { get(): Promise<{ values: unknown[] }> }): Promise<string[]> {
  return (await metric.get()).values.map((v) => JSON.stringify(v)).sort();
}

test('in-place series report exactly what prom-client inc()/observe() report', async () => {
  const m = new ProxyMetrics({ defaultMetrics: false });
  const ref = reference();
  let seed = 7;
  const rnd = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
  const routes = ['/', '/api', 'example.com/x'];
  const ups = ['web', 'api'];
  const hosts = ['127.0.0.1:9000', 'unix:/tmp/a.sock'];
  const outcomes = ['ok', 'error', 'timeout'] as const;
  for (let round = 0; round < 2; round++) {
    for (let i = 0; i < 5000; i++) {
      const route = routes[Math.floor(rnd() * routes.length)];
      const upstream = ups[Math.floor(rnd() * ups.length)];
      const status = [200, 200, 404, 502, 499][Math.floor(rnd() * 5)];
      // spans every bucket, exact bounds included, and values above the last one
      const seconds = rnd() < 0.1 ? BUCKETS[Math.floor(rnd() * BUCKETS.length)] : rnd() ** 4 * 80;
      const bin = rnd() < 0.5 ? 0 : Math.floor(rnd() * 10000);
      const bout = Math.floor(rnd() * 5000);
      m.requestFinished(route, upstream, status, seconds, bin, bout);
      ref.requests.inc({ route, upstream, status: String(status) });
      ref.duration.observe({ route, upstream }, seconds);
      if (bin > 0) ref.bytesIn.inc({ route, upstream }, bin);
      if (bout > 0) ref.bytesOut.inc({ route, upstream }, bout);
      const host = hosts[Math.floor(rnd() * hosts.length)];
      const outcome = outcomes[Math.floor(rnd() * outcomes.length)];
      m.upstreamRequest(upstream, host, seconds, outcome);
      ref.up.observe({ upstream, host, outcome }, seconds);
    }
    assert.deepEqual(await values(m.requests), await values(ref.requests));
    assert.deepEqual(await values(m.requestDuration), await values(ref.duration));
    assert.deepEqual(await values(m.upstreamDuration), await values(ref.up));
    assert.deepEqual(await values(m.bytesIn), await values(ref.bytesIn));
    assert.deepEqual(await values(m.bytesOut), await values(ref.bytesOut));
    assert.match(await m.text(), /gatewire_http_requests_total\{route="\/",upstream="web",status="200"\} \d+/);
    // a reset starts every series again from zero, on both sides
    for (const metric of [m.requests, m.requestDuration, m.upstreamDuration, m.bytesIn, m.bytesOut]) metric.reset();
    for (const metric of [ref.requests, ref.duration, ref.up, ref.bytesIn, ref.bytesOut]) metric.reset();
  }
});
