// The life of a tunnel through `gatewire proxy`: what a uwsgi upstream
// answers (502 and why), `upgrade: false` on a route, the idle timeout, a
// proxy reload (SIGHUP) and an appserver rolling reload with 100 sockets open,
// and a graceful stop.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { test } from 'node:test';
import type WebSocket from 'ws';
import { startServe } from './helpers/appserver-clients.ts';
import { freePort, tempDir } from './helpers/net.ts';
import { startGatewire } from './helpers/procs.ts';
import { startAppserver, startProxy, startUwsgiFlask } from './helpers/proxy-harness.ts';
import { nextMessage, openWs } from './helpers/websocket-clients.ts';

/** A raw HTTP/1.1 upgrade request; resolves with what came back before the connection closed or `ms` passed. */
function rawUpgrade(port: number, path: string, ms = 3000): Promise<string> {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    let out = '';
    sock.on('data', (d) => {
      out += d.toString('latin1');
    });
    const done = () => {
      sock.destroy();
      resolve(out);
    };
    sock.on('close', done);
    sock.on('error', done);
    setTimeout(done, ms);
    sock.write(`GET ${path} HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`);
  });
}

test('a uwsgi upstream cannot carry an upgrade: 502 and a log line saying why and what to use', { timeout: 60_000 }, async (t) => {
  const flask = await startUwsgiFlask(t, 'flask');
  const proxy = await startProxy(t, { upstreams: { py: { protocol: 'uwsgi', servers: [flask.address] } } }, { admin: false });
  const answer = await rawUpgrade(proxy.port, '/ws');
  assert.match(answer, /^HTTP\/1\.1 502 /);
  await proxy.proc.waitFor(/speaks uwsgi, which cannot carry a WebSocket.*gatewire upstream.*http one/, 5000);
});

test('routes[].upgrade: false forwards the request without its Upgrade, as before tunnels existed', { timeout: 60_000 }, async (t) => {
  const app = await startAppserver(t, 'plain');
  const proxy = await startProxy(t, { routes: [{ match: { path_prefix: '/' }, upstream: 'app', upgrade: false }], upstreams: { app: { servers: [app.address] } } }, { admin: false });
  const answer = await rawUpgrade(proxy.port, '/ws');
  assert.match(answer, /^HTTP\/1\.1 200 /);
  const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4).replace(/^[0-9a-f]+\r\n/, '').split('\r\n')[0]);
  assert.equal(body.path, '/ws');
  assert.equal(body.headers.upgrade, undefined);
  assert.equal(body.headers['sec-websocket-key'], 'dGhlIHNhbXBsZSBub25jZQ==');
});

test('timeouts.tunnel_idle closes a tunnel with no byte either way; traffic keeps another open', { timeout: 60_000 }, async (t) => {
  const { dir, cleanup } = tempDir('gw-wsl-');
  t.after(cleanup);
  const serve = await startServe(['test/apps/ws-node-server.ts', '--listen', `unix:${dir}/a.sock`, '--workers', '0']);
  t.after(() => serve.stop(5000));
  const proxy = await startProxy(t, { upstreams: { app: { servers: [`unix:${dir}/a.sock`], timeouts: { tunnel_idle: '1s' } } } }, { admin: false });
  const base = proxy.url.replace('http', 'ws');
  const idle = await openWs(`${base}/ws`);
  const busy = await openWs(`${base}/ws`);
  const start = Date.now();
  const idleClosed = once(idle, 'close').then(() => Date.now() - start);
  while (Date.now() - start < 2500) {
    busy.send('tick');
    await nextMessage(busy);
    await new Promise((r) => setTimeout(r, 250));
  }
  const after = await idleClosed;
  assert.ok(after >= 900 && after < 2500, `idle tunnel closed after ${after} ms`);
  assert.equal(busy.readyState, 1, 'the busy tunnel is still open');
  busy.close();
  await proxy.proc.waitFor(/"closed_by":"idle 1000 ms"/, 5000);
});

async function openMany(url: string, n: number): Promise<WebSocket[]> {
  const out: WebSocket[] = [];
  for (let i = 0; i < n; i += 25) out.push(...(await Promise.all(Array.from({ length: Math.min(25, n - i) }, () => openWs(url)))));
  return out;
}

async function allEcho(sockets: WebSocket[], tag: string): Promise<void> {
  const replies = await Promise.all(
    sockets.map((ws, i) => {
      const p = nextMessage(ws);
      ws.send(`${tag} ${i}`);
      return p;
    }),
  );
  for (let i = 0; i < replies.length; i++) assert.equal(replies[i].data.toString(), `${tag} ${i}`);
}

test('proxy reload (SIGHUP) with 100 open sockets: none dropped, all keep working on their generation', { timeout: 90_000 }, async (t) => {
  const { dir, cleanup } = tempDir('gw-wsl-');
  t.after(cleanup);
  const serve = await startServe(['test/apps/ws-node-server.ts', '--listen', `unix:${dir}/a.sock`, '--workers', '0', '--max-streams', '256']);
  t.after(() => serve.stop(5000));
  const spec = { upstreams: { app: { servers: [`unix:${dir}/a.sock`] } } };
  const proxy = await startProxy(t, spec, { admin: false });
  const base = proxy.url.replace('http', 'ws');
  const sockets = await openMany(`${base}/ws`, 100);
  let closed = 0;
  for (const ws of sockets) ws.once('close', () => closed++);
  // The new config changes the upstream (a runtime of its own): old tunnels stay on the old one.
  proxy.rewrite({ upstreams: { app: { servers: [`unix:${dir}/a.sock`], timeouts: { read: '30s' } } } });
  proxy.proc.kill('SIGHUP');
  await proxy.proc.waitFor(/configuration reloaded/, 10_000);
  await allEcho(sockets, 'after reload');
  const fresh = await openWs(`${base}/ws`);
  await allEcho([fresh], 'new generation');
  assert.equal(closed, 0, 'no socket dropped by the reload');
  for (const ws of [...sockets, fresh]) ws.close();
});

test('appserver rolling reload (SIGHUP) with 100 open sockets: closed with 1001 only after the graceful timeout', { timeout: 90_000 }, async (t) => {
  const { dir, cleanup } = tempDir('gw-wsl-');
  t.after(cleanup);
  const serve = await startServe(['test/apps/ws-node-server.ts', '--listen', `unix:${dir}/a.sock`, '--workers', '1', '--graceful-timeout', '3', '--max-streams', '256']);
  t.after(() => serve.stop(10_000));
  const proxy = await startProxy(t, { upstreams: { app: { servers: [`unix:${dir}/a.sock`] } } }, { admin: false });
  const base = proxy.url.replace('http', 'ws');
  const sockets = await openMany(`${base}/ws`, 100);
  const closes = sockets.map((ws) => once(ws, 'close').then(([code]) => ({ code: code as number, at: Date.now() })));
  const start = Date.now();
  serve.kill('SIGHUP');
  // The replacement worker is up and the old one is draining: during the graceful period the old
  // worker keeps its WebSockets working, and new ones reach the new worker.
  await serve.waitFor(/worker stopping gracefully/, 20_000);
  await new Promise((r) => setTimeout(r, 500));
  await allEcho(sockets, 'during reload');
  const fresh = await openWs(`${base}/ws`);
  await allEcho([fresh], 'new worker');
  const results = await Promise.all(closes);
  for (const r of results) {
    assert.equal(r.code, 1001);
    assert.ok(r.at - start >= 2900, `closed after ${r.at - start} ms, before the 3 s graceful timeout`);
  }
  assert.equal(fresh.readyState, 1, 'the socket on the new worker stays open');
  fresh.close();
});

test('graceful stop of the proxy: open tunnels are served through the grace period, then closed', { timeout: 60_000 }, async (t) => {
  const { dir, cleanup } = tempDir('gw-wsl-');
  t.after(cleanup);
  const serve = await startServe(['test/apps/ws-node-server.ts', '--listen', `unix:${dir}/a.sock`, '--workers', '0']);
  t.after(() => serve.stop(5000));
  const port = await freePort();
  const config = `${dir}/proxy.json`;
  (await import('node:fs')).writeFileSync(
    config,
    JSON.stringify({ listen: { host: '127.0.0.1', port }, admin: false, routes: [{ match: { path_prefix: '/' }, upstream: 'app' }], upstreams: { app: { servers: [{ address: `unix:${dir}/a.sock` }] } } }),
  );
  const proxy = startGatewire(['proxy', '--config', config, '--grace', '2000']);
  t.after(() => proxy.stop(5000));
  await proxy.waitFor(/listening on/, 20_000);
  const ws = await openWs(`ws://127.0.0.1:${port}/ws`);
  const closed = once(ws, 'close').then(() => Date.now());
  const start = Date.now();
  proxy.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 700));
  await allEcho([ws], 'during the grace period');
  const at = await closed;
  assert.ok(at - start >= 1700, `closed after ${at - start} ms, before the end of the 2 s grace period`);
  assert.equal(await proxy.exited, 0, proxy.output().slice(-2000));
});

function rssKb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN);
}

test('a slow reader stalls only its own tunnel: the app is held back, the proxy buffers a bounded amount, other tunnels flow', { timeout: 90_000 }, async (t) => {
  const { dir, cleanup } = tempDir('gw-wsl-');
  t.after(cleanup);
  const serve = await startServe(['test/apps/ws-node-server.ts', '--listen', `unix:${dir}/a.sock`, '--workers', '0']);
  t.after(() => serve.stop(5000));
  const proxy = await startProxy(t, { upstreams: { app: { servers: [`unix:${dir}/a.sock`], connections_per_server: 1 } } }, { admin: false });
  const base = proxy.url.replace('http', 'ws');
  const floodSent = async () => ((await (await fetch(`${proxy.url}/stats`)).json()) as { floodSent: number }).floodSent;
  const slow = await openWs(`${base}/ws`, [], { maxPayload: 1 << 30 });
  const total = 24 * 1024 * 1024;
  let received = 0;
  slow.on('message', (d: Buffer) => {
    received += d.length;
  });
  const socket = (slow as unknown as { _socket: net.Socket })._socket;
  socket.pause(); // the client stops reading
  const rssBefore = rssKb(proxy.proc.child.pid as number);
  slow.send(`flood:${total}`);
  // The app gets as far as the windows and buffers on the way allow, then waits.
  let last = -1;
  for (let i = 0; i < 40; i++) {
    await new Promise((r) => setTimeout(r, 250));
    const now = await floodSent();
    if (now === last && now > 0) break;
    last = now;
  }
  const stalledAt = await floodSent();
  assert.ok(stalledAt < total / 2, `the app was held back at ${stalledAt} of ${total} bytes`);
  const growthKb = rssKb(proxy.proc.child.pid as number) - rssBefore;
  assert.ok(growthKb < 16 * 1024, `the proxy grew by ${growthKb} KiB while holding a stalled tunnel`);
  // Another tunnel on the same native connection is not affected.
  const other = await openWs(`${base}/ws`);
  const big = Buffer.alloc(2 * 1024 * 1024, 7);
  other.send(big);
  assert.ok((await nextMessage(other)).data.equals(big));
  other.close();
  // The slow reader catches up and gets every byte.
  socket.resume();
  const deadline = Date.now() + 60_000;
  while (received < total) {
    assert.ok(Date.now() < deadline, `received ${received} of ${total}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  slow.close();
  t.diagnostic(`app held at ${(stalledAt / 1048576).toFixed(1)} MiB of ${total / 1048576} MiB; proxy RSS growth ${growthKb} KiB`);
});

test('any Upgrade token is tunnelled (not only websocket), each direction half-closing on its own; a declined one is answered as is', { timeout: 60_000 }, async (t) => {
  const { dir, cleanup } = tempDir('gw-wsl-');
  t.after(cleanup);
  const serve = await startServe(['test/apps/raw-upgrade-echo.ts', '--listen', `unix:${dir}/a.sock`, '--workers', '0']);
  t.after(() => serve.stop(5000));
  const proxy = await startProxy(t, { upstreams: { app: { servers: [`unix:${dir}/a.sock`] } } }, { admin: false });
  const sock = net.connect(proxy.port, '127.0.0.1');
  sock.on('error', () => {});
  let got = '';
  sock.on('data', (d) => {
    got += d.toString('latin1');
  });
  const ended = once(sock, 'end');
  sock.write('GET /tunnel HTTP/1.1\r\nHost: a.test\r\nUpgrade: x-echo\r\nConnection: Upgrade\r\n\r\n');
  const deadline = Date.now() + 10_000;
  while (!got.includes('\r\n\r\n')) {
    assert.ok(Date.now() < deadline, got);
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.match(got, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
  assert.match(got, /\r\nupgrade: x-echo\r\n/i);
  got = '';
  sock.write('ping 1 ');
  sock.end('ping 2'); // our direction ends; the app still answers, then ends its own
  await ended;
  assert.equal(got, 'ping 1 ping 2bye\n');
  const declined = await rawUpgrade(proxy.port, '/other');
  assert.match(declined, /^HTTP\/1\.1 400 /);
  assert.match(declined, /bad upgrade\n$/);
});
