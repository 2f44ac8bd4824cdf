// 10,000 concurrent client connections held open against the proxy (each has
// made a request and stays in keep-alive): the proxy keeps answering new
// clients and the held connections alike; its peak RSS is reported. The fd
// limits are raised for the proxy and for the client, which runs in its own
// process (`sh -c 'ulimit -n ... && exec node ...'`).
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { startProcess } from './helpers/procs.ts';
import {
  eventually,
  fdLimitOf,
  parseResponses,
  procMemory,
  raiseFdLimit,
  rawRequest,
  scratchDir,
  startApp,
  startGuardedProxy,
} from './helpers/guarantee-stack.ts';

const CONNECTIONS = 10_000;

/**
 * The client: opens CONNECTIONS keep-alive connections from 4 loopback source addresses (2,500 each,
 * well inside every address's ephemeral port range), sends one request on each and checks the answer,
 * prints HOLDING, then on "again" on stdin sends one more request on every 10th held connection and
 * prints AGAIN. It exits when stdin closes.
 */
const CLIENT = `
import net from 'node:net';
const [port, total] = [Number(process.argv[2]), Number(process.argv[3])];
const REQ = 'GET /hello HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n';
const socks = [];
let failures = 0;
function ask(sock) {
  return new Promise((resolve) => {
    let got = '';
    const onData = (d) => {
      got += d.toString('latin1');
      if (got.endsWith('hello from A')) { sock.off('data', onData); resolve(true); }
    };
    sock.on('data', onData);
    sock.write(REQ);
  });
}
function open(i) {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1', localAddress: '127.0.0.' + (1 + (i % 4)) });
    sock.setTimeout(60000, () => { failures++; sock.destroy(); resolve(); });
    sock.once('error', (err) => { failures++; console.log('ERR ' + err.code); resolve(); });
    sock.once('connect', async () => { await ask(sock); socks.push(sock); resolve(); });
  });
}
const started = Date.now();
for (let i = 0; i < total; i += 250) {
  await Promise.all(Array.from({ length: Math.min(250, total - i) }, (_, k) => open(i + k)));
}
let closedEarly = 0;
for (const s of socks) s.once('close', () => closedEarly++);
console.log('HOLDING ' + JSON.stringify({ held: socks.length, failures, ms: Date.now() - started }));
process.stdin.on('data', async (d) => {
  if (!String(d).includes('again')) return;
  const sample = socks.filter((_, i) => i % 10 === 0);
  const ok = (await Promise.all(sample.map((s) => Promise.race([ask(s), new Promise((r) => setTimeout(() => r(false), 30000))])))).filter(Boolean).length;
  console.log('AGAIN ' + JSON.stringify({ asked: sample.length, ok, closedEarly }));
});
process.stdin.on('end', () => process.exit(0));
`;

test('10,000 concurrent client connections held open: the proxy keeps answering new and held connections; peak RSS reported', { timeout: 120000 }, async (t) => {
  const dir = scratchDir(t);
  const app = await startApp(t, 'A');
  const proxy = await startGuardedProxy(
    t,
    { upstreams: { app: { servers: [app.address] } }, limits: { keepalive_timeout: '120s', header_timeout: '120s' } },
    { fdLimit: 65536 },
  );
  const proxyFds = fdLimitOf(proxy.pid);
  assert.ok(proxyFds > CONNECTIONS + 200, `the proxy's fd limit (${proxyFds}) leaves room for ${CONNECTIONS} connections`);
  const baseline = procMemory(proxy.pid);

  const clientFile = path.join(dir, 'client.mjs');
  writeFileSync(clientFile, CLIENT);
  const client = startProcess('sh', ['-c', `${raiseFdLimit(65536)} && exec "$0" "$@"`, process.execPath, clientFile, String(proxy.port), String(CONNECTIONS)], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  t.after(() => {
    client.child.stdin?.end();
    return client.stop(5000);
  });
  const holding = JSON.parse((await client.waitFor(/HOLDING (\{.*\})/, 90000))[1]) as { held: number; failures: number; ms: number };
  assert.equal(holding.failures, 0, client.output().slice(-2000));
  assert.equal(holding.held, CONNECTIONS);

  const status = await proxy.status();
  assert.ok(status.connections >= CONNECTIONS, `/status counts ${status.connections} open client connections`);
  // new clients are answered while the 10,000 are held
  for (let i = 0; i < 20; i++) {
    const r = await rawRequest(proxy.port, 'GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', { timeoutMs: 20000 });
    assert.equal(parseResponses(r.data).responses[0]?.body.toString(), 'hello from A');
  }
  // and the held connections still work
  client.child.stdin?.write('again\n');
  const again = JSON.parse((await client.waitFor(/AGAIN (\{.*\})/, 60000))[1]) as { asked: number; ok: number; closedEarly: number };
  assert.deepEqual(again, { asked: CONNECTIONS / 10, ok: CONNECTIONS / 10, closedEarly: 0 });

  const held = procMemory(proxy.pid);
  t.diagnostic(
    `${CONNECTIONS} connections opened and answered in ${holding.ms} ms; proxy RSS ${mb(baseline.rss)} MB idle → ${mb(held.rss)} MB holding them, peak RSS ${mb(held.peakRss)} MB, ${held.fds} fds (limit ${proxyFds})`,
  );

  client.child.stdin?.end();
  await client.exited;
  await eventually(async () => (await proxy.status()).connections === 0, 20000, 'every client connection is closed at the proxy once the client left');
});

const mb = (n: number) => (n / 1048576).toFixed(1);
