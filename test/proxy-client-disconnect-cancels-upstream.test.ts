// A client that goes away cancels its upstream exchange at once: the app sees
// its request aborted (gatewire: RESET(CANCEL) on the stream; uwsgi: the
// per-request connection closed) long before it would have answered.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { test } from 'node:test';
import { freePort, tempDir, waitForListen } from './helpers/net.ts';
import { startGatewire } from './helpers/procs.ts';
import { startProxy } from './helpers/proxy-harness.ts';

const ABORT_APP = `
export default {
  async fetch(req) {
    const t0 = Date.now();
    const aborted = await new Promise((resolve) => {
      req.signal.addEventListener('abort', () => resolve(true));
      setTimeout(() => resolve(false), 8000);
    });
    console.log((aborted ? 'ABORTED' : 'COMPLETED') + ' ' + new URL(req.url).pathname + ' after ' + (Date.now() - t0) + ' ms');
    return new Response('late');
  },
};
`;

for (const protocol of ['gatewire'] as const) {
  test(`a client disconnect cancels the upstream request at once (${protocol})`, { timeout: 60000 }, async (t) => {
    const { dir, cleanup } = tempDir('gwa-');
    t.after(cleanup);
    writeFileSync(path.join(dir, 'abort.mjs'), ABORT_APP);
    const address = `127.0.0.1:${await freePort()}`;
    const app = startGatewire(['serve', path.join(dir, 'abort.mjs'), '--listen', address, '--workers', '0', '--log-level', 'warn']);
    t.after(() => app.stop(3000));
    await app.waitFor(/listening on/, 20000);
    await waitForListen(address);
    const proxy = await startProxy(t, { upstreams: { app: { protocol, servers: [address] } } });

    const req = http.get(`${proxy.url}/gone-${protocol}`);
    req.on('error', () => {});
    await new Promise((r) => setTimeout(r, 700));
    req.destroy();
    const m = await app.waitFor(new RegExp(`(ABORTED|COMPLETED) /gone-${protocol} after (\\d+) ms`), 15000);
    assert.equal(m[1], 'ABORTED');
    assert.ok(Number(m[2]) < 4000, `the app noticed after ${m[2]} ms`);
    await new Promise((r) => setTimeout(r, 300));
    assert.match(proxy.proc.output(), /"status":499/, 'the access log records the client abort as 499');
  });
}

test('a client disconnect closes the uwsgi connection at once', { timeout: 60000 }, async (t) => {
  // a uwsgi peer that reads the request and never answers; it records when the proxy hangs up
  // (uWSGI itself only notices on its next write, so the socket is what we observe)
  let closedAfter = -1;
  let received = 0;
  const peer = net.createServer((s) => {
    const t0 = Date.now();
    s.on('data', (d) => {
      received += d.length;
    });
    s.on('close', () => {
      closedAfter = Date.now() - t0;
    });
  });
  peer.listen(0, '127.0.0.1');
  await once(peer, 'listening');
  t.after(() => peer.close());
  const port = (peer.address() as net.AddressInfo).port;
  const proxy = await startProxy(t, { upstreams: { app: { protocol: 'uwsgi', servers: [`127.0.0.1:${port}`] } } });
  const req = http.get(`${proxy.url}/gone-uwsgi`);
  req.on('error', () => {});
  await new Promise((r) => setTimeout(r, 700));
  assert.ok(received > 4, 'the uwsgi packet arrived');
  assert.equal(closedAfter, -1);
  req.destroy();
  const deadline = Date.now() + 5000;
  while (closedAfter < 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.ok(closedAfter >= 0 && closedAfter < 3000, `upstream connection closed after ${closedAfter} ms`);
});
