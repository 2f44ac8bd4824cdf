// The appserver's rolling restart (SIGHUP: each worker is replaced, the old
// one sends GOAWAY and finishes its streams) under steady load through the
// proxy's persistent gatewire sessions: streams the server did not accept are
// retried on a fresh connection, so no client request fails.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { call, countBy, startAppserver, startProxy } from './helpers/proxy-harness.ts';

test('appserver rolling restart (GOAWAY) under load: every request succeeds', { timeout: 90000 }, async (t) => {
  const app = await startAppserver(t, 'A', { workers: 2 });
  const proxy = await startProxy(t, { upstreams: { app: { protocol: 'gatewire', servers: [app.address], connections_per_server: 2 } } });
  let stop = false;
  const statuses: number[] = [];
  const worker = async () => {
    while (!stop) {
      const r = await call(`${proxy.url}/slow?ms=20`, { method: 'POST', body: 'payload' }).catch(() => ({ status: 0, text: '' }));
      statuses.push(r.status);
    }
  };
  const workers = Array.from({ length: 6 }, worker);
  await new Promise((r) => setTimeout(r, 1000));
  app.proc.kill('SIGHUP');
  await new Promise((r) => setTimeout(r, 6000));
  stop = true;
  await Promise.all(workers);
  const counts = countBy(statuses);
  assert.deepEqual([...counts.keys()], [200], JSON.stringify([...counts]));
  assert.ok(statuses.length > 100, `${statuses.length} requests`);
});
