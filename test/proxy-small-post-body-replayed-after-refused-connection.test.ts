// A POST body within body_buffer_size is read whole before the first try, so
// a try the server never processed (connection refused) is replayed on the
// next server with the same bytes; with body_buffer_size: 0 the body streams
// and that same POST cannot be replayed (502), which proves the setting is
// what makes the difference. http upstreams start reading a streamed body at
// once, the strictest case.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { freePort } from './helpers/net.ts';
import { call, countBy, startNodeBackend, startProxy } from './helpers/proxy-harness.ts';

test('POST bodies up to body_buffer_size are replayed on another server after a refused connection', { timeout: 60000 }, async (t) => {
  const live = await startNodeBackend(t, 'live');
  const dead = `127.0.0.1:${await freePort()}`; // nothing listens: every connect is refused
  // max_fails: 0 keeps the dead server in rotation, so every other request tries it first
  const upstream = { protocol: 'http' as const, balance: 'round_robin', max_fails: 0, servers: [dead, live.address] };
  const buffered = await startProxy(t, { upstreams: { app: upstream } });
  const streamed = await startProxy(t, { upstreams: { app: { ...upstream, body_buffer_size: 0 } } });
  const body = Buffer.alloc(20_000, 'b');

  const replayed: number[] = [];
  for (let i = 0; i < 8; i++) {
    const r = await call(`${buffered.url}/post`, { method: 'POST', body, headers: { 'content-type': 'application/octet-stream' } });
    assert.equal(r.status, 200, r.text);
    const j = r.json<{ name: string; bodyLen: number; method: string }>();
    assert.equal(j.name, 'live');
    assert.equal(j.method, 'POST');
    replayed.push(j.bodyLen);
  }
  assert.deepEqual(replayed, Array(8).fill(body.length));

  const statuses: number[] = [];
  for (let i = 0; i < 8; i++) {
    const r = await call(`${streamed.url}/post`, { method: 'POST', body, headers: { 'content-type': 'application/octet-stream' } });
    statuses.push(r.status);
  }
  const counts = countBy(statuses);
  assert.ok((counts.get(502) ?? 0) >= 1, `streamed bodies: ${JSON.stringify([...counts])}`);
  assert.ok((counts.get(200) ?? 0) >= 1, `streamed bodies: ${JSON.stringify([...counts])}`);
});
