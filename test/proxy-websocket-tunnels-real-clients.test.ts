// WebSockets through `gatewire proxy`, with the real `ws` and socket.io
// clients, to three kinds of upstream: gatewire serve over a native TCP
// connection (ws on an exported http.Server), gatewire serve over a Unix
// socket (a Fetch app with info.upgradeWebSocket), and the same ws app on
// plain node:http (protocol http, tunnelled after its 101 as NGINX does).
// Echo from 1 byte to 16 MiB, subprotocols, permessage-deflate, ping/pong,
// close codes both ways, the headers the app needs, a vanishing client, 200
// sockets on one native connection, and nothing left open afterwards.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import type net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { io, type Socket as IoSocket } from 'socket.io-client';
import type WebSocket from 'ws';
import { startServe } from './helpers/appserver-clients.ts';
import { freePort, tempDir, waitForListen } from './helpers/net.ts';
import { type Proc, ROOT, startProcess } from './helpers/procs.ts';
import { accessLog, type RunningProxy, startProxy } from './helpers/proxy-harness.ts';
import { eventually, nextMessage, openWs, suiteContext } from './helpers/websocket-clients.ts';

const SIZES = [1, 125, 126, 65_535, 65_536, 1024 * 1024, 16 * 1024 * 1024];

/** Established TCP connections to a local port (the proxy's native connections to an appserver). */
function establishedTo(port: number): number {
  const out = execFileSync('ss', ['-Htn', 'state', 'established', `( dport = :${port} )`], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l.trim() !== '').length;
}

interface Upstream {
  name: string;
  app: string;
  start(dir: string): Promise<{ address: string; protocol: 'gatewire' | 'http'; proc: Proc; port?: number }>;
}

const UPSTREAMS: Upstream[] = [
  {
    name: 'gatewire serve over TCP (ws on an exported http.Server)',
    app: 'test/apps/ws-node-server.ts',
    async start() {
      const port = await freePort();
      const proc = await startServe(['test/apps/ws-node-server.ts', '--listen', `127.0.0.1:${port}`, '--workers', '0', '--max-streams', '256']);
      return { address: `127.0.0.1:${port}`, protocol: 'gatewire', proc, port };
    },
  },
  {
    name: 'gatewire serve over a Unix socket (Fetch app, info.upgradeWebSocket)',
    app: 'test/apps/ws-fetch.ts',
    async start(dir) {
      const address = `unix:${dir}/ws.sock`;
      const proc = await startServe(['test/apps/ws-fetch.ts', '--listen', address, '--workers', '0', '--max-streams', '256']);
      return { address, protocol: 'gatewire', proc };
    },
  },
  {
    name: 'node:http (protocol http, tunnelled after its 101)',
    app: 'test/apps/ws-node-server.ts',
    async start() {
      const port = await freePort();
      const proc = startProcess(process.execPath, ['--import', path.join(ROOT, 'bin/typescript-loader.js'), 'test/apps/listen.ts', 'test/apps/ws-node-server.ts', String(port)], { cwd: ROOT });
      await waitForListen(`127.0.0.1:${port}`);
      return { address: `127.0.0.1:${port}`, protocol: 'http', proc };
    },
  },
];

for (const up of UPSTREAMS) {
  describe(`ws client → gatewire proxy → ${up.name}`, { timeout: 180_000 }, () => {
    const { dir, cleanup } = tempDir('gw-wsp-');
    let backend: { address: string; protocol: 'gatewire' | 'http'; proc: Proc; port?: number };
    let proxy: RunningProxy;
    let base: string;
    const suite = suiteContext();

    before(async () => {
      backend = await up.start(dir);
      proxy = await startProxy(suite.t, { upstreams: { app: { protocol: backend.protocol, servers: [backend.address], connections_per_server: 1 } } }, { admin: true });
      base = proxy.url.replace('http', 'ws');
    });
    after(async () => {
      await suite.close();
      await backend?.proc.stop(5000);
      cleanup();
    });

    test('text and binary messages from 1 byte to 16 MiB come back unchanged', async () => {
      const ws = await openWs(`${base}/ws`);
      for (const size of SIZES) {
        const bin = Buffer.alloc(size);
        for (let i = 0; i < size; i += 1000) bin[i] = (i / 1000) & 0xff;
        ws.send(bin);
        const b = await nextMessage(ws);
        assert.equal(b.isBinary, true);
        assert.ok(b.data.equals(bin), `binary ${size}`);
        const text = 'ж'.repeat(Math.max(1, size >> 1));
        ws.send(text);
        const t = await nextMessage(ws);
        assert.equal(t.isBinary, false);
        assert.equal(t.data.toString(), text, `text ${size}`);
      }
      ws.close(1000);
      await once(ws, 'close');
    });

    test('subprotocol, permessage-deflate and ping/pong are negotiated end to end; the 101 carries the request id', async () => {
      const ws = await openWs(`${base}/ws`, ['chat.v1', 'chat.v2'], { perMessageDeflate: true, headers: { 'x-request-id': 'ws-req-1' } });
      assert.equal(ws.protocol, 'chat.v2');
      assert.match(ws.extensions, /permessage-deflate/);
      const headers = (ws as WebSocket & { upgradeHeaders?: Record<string, string | string[]> }).upgradeHeaders ?? {};
      assert.equal(headers['x-request-id'], 'ws-req-1');
      if (up.app.includes('fetch')) assert.deepEqual(headers['set-cookie'], ['ws=1; Path=/']);
      const big = Buffer.alloc(512 * 1024, 'z');
      ws.send(big);
      assert.ok((await nextMessage(ws)).data.equals(big));
      ws.ping(Buffer.from('ping through the proxy'));
      const [pong] = await once(ws, 'pong');
      assert.equal(pong.toString(), 'ping through the proxy');
      ws.close(1000);
      await once(ws, 'close');
    });

    test('close codes both ways', async () => {
      const a = await openWs(`${base}/ws`);
      a.send('close:4001:bye from the app');
      const [code, reason] = await once(a, 'close');
      assert.equal(code, 4001);
      assert.equal(reason.toString(), 'bye from the app');
      const b = await openWs(`${base}/ws`);
      b.close(4002, 'bye from the client');
      await once(b, 'close');
      await eventually(async () => ((await (await fetch(`${proxy.url}/stats`)).json()) as { closes: number[] }).closes.includes(4002), 'the app saw 4002');
    });

    if (!up.app.includes('fetch')) {
      test('the headers the app needs reach it: Origin, Cookie, Authorization, X-Forwarded-For, X-Request-Id', async () => {
        const ws = await openWs(`${base}/ws`, [], { headers: { origin: 'http://chat.test', cookie: 'sid=abc', authorization: 'Bearer t0k', 'x-request-id': 'rid-42' } });
        ws.close();
        await once(ws, 'close');
        const stats = (await (await fetch(`${proxy.url}/stats`)).json()) as { headers: Array<Record<string, string>> };
        const seen = stats.headers.find((h) => h.xrid === 'rid-42');
        assert.ok(seen, JSON.stringify(stats.headers.slice(-3)));
        assert.equal(seen.origin, 'http://chat.test');
        assert.equal(seen.cookie, 'sid=abc');
        assert.equal(seen.authorization, 'Bearer t0k');
        assert.equal(seen.xff, '127.0.0.1');
      });
    }

    test('a client that vanishes (TCP RST): the app sees the close; the proxy keeps nothing open', async () => {
      const statsOf = async () => (await (await fetch(`${proxy.url}/stats`)).json()) as { open: number };
      const before = (await statsOf()).open;
      const sockets = await Promise.all(Array.from({ length: 5 }, () => openWs(`${base}/ws`)));
      await eventually(async () => (await statsOf()).open === before + 5, 'five open at the app');
      for (const ws of sockets) (ws as unknown as { _socket: net.Socket })._socket.resetAndDestroy();
      await eventually(async () => (await statsOf()).open === before, 'the app saw every socket close');
      const metrics = await (await fetch(`${proxy.admin}/metrics`)).text();
      assert.match(metrics, /^gatewire_tunnels_open 0$/m);
    });

    test('200 concurrent sockets (multiplexed on the existing native connections for gatewire upstreams)', async () => {
      const connectionsBefore = backend.port !== undefined ? establishedTo(backend.port) : 0;
      const sockets = await Promise.all(Array.from({ length: 200 }, () => openWs(`${base}/ws`)));
      // The appserver takes 256 streams per connection: the 200 tunnels need no new native connection.
      if (backend.port !== undefined) assert.equal(establishedTo(backend.port), connectionsBefore, 'tunnels multiplexed on the existing native connection(s)');
      const replies = await Promise.all(
        sockets.map((ws, i) => {
          const p = nextMessage(ws);
          ws.send(`hello ${i}`);
          return p;
        }),
      );
      for (let i = 0; i < replies.length; i++) assert.equal(replies[i].data.toString(), `hello ${i}`);
      await Promise.all(
        sockets.map((ws) => {
          ws.close();
          return once(ws, 'close');
        }),
      );
      await eventually(async () => /^gatewire_tunnels_open 0$/m.test(await (await fetch(`${proxy.admin}/metrics`)).text()), 'no tunnel left open');
      const metrics = await (await fetch(`${proxy.admin}/metrics`)).text();
      assert.match(metrics, /gatewire_upgrades_total\{route="\/",upstream="app",status="101"\} \d+/);
      assert.match(metrics, /gatewire_tunnel_bytes_total\{direction="up"\} \d+/);
      assert.match(metrics, /gatewire_tunnel_bytes_total\{direction="down"\} \d+/);
      // one access line per tunnel, written when it closed, with its bytes (the log is flushed every second)
      const tunnelLines = () => accessLog(proxy).filter((l) => l.status === 101);
      await eventually(() => tunnelLines().length >= 200, 'an access line for each of the 200 tunnels');
      const tunnels = tunnelLines();
      assert.ok(tunnels.every((l) => typeof l.bytes_in === 'number' && typeof l.bytes_out === 'number' && typeof l.ms === 'number'));
    });
  });
}

describe('socket.io-client → gatewire proxy → examples/socketio-chat.ts', { timeout: 120_000 }, () => {
  const { dir, cleanup } = tempDir('gw-sio-');
  const procs: Proc[] = [];
  after(async () => {
    for (const p of procs) await p.stop(5000);
    cleanup();
  });

  async function chatThrough(t: import('node:test').TestContext, protocol: 'gatewire' | 'http', address: string): Promise<void> {
    const proxy = await startProxy(t, { upstreams: { app: { protocol, servers: [address] } } }, { admin: false });
    const connect = (transports?: Array<'polling' | 'websocket'>) =>
      new Promise<IoSocket>((resolve, reject) => {
        const s = io(proxy.url, { transports, reconnection: false, timeout: 10_000 });
        s.once('connect', () => resolve(s));
        s.once('connect_error', reject);
      });
    const polling = await connect(['polling']);
    const websocket = await connect(['websocket']);
    const upgrading = await connect();
    if (upgrading.io.engine.transport.name !== 'websocket') await new Promise((r) => upgrading.io.engine.once('upgrade', r));
    assert.equal(polling.io.engine.transport.name, 'polling');
    assert.equal(websocket.io.engine.transport.name, 'websocket');
    const everyone = [polling, websocket, upgrading];
    for (const [i, sender] of everyone.entries()) {
      const received = everyone.map((s) => new Promise<{ text: string }>((resolve) => s.once('chat', resolve)));
      await sender.timeout(10_000).emitWithAck('chat', { name: `c${i}`, text: `message ${i}` });
      for (const m of await Promise.all(received)) assert.equal(m.text, `message ${i}`);
    }
    for (const s of everyone) s.disconnect();
    await eventually(async () => ((await (await fetch(`${proxy.url}/stats`)).json()) as { clients: number }).clients === 0, 'every client left');
  }

  test('to gatewire serve (native): polling, websocket and upgrading transports', async (t) => {
    const address = `unix:${dir}/chat.sock`;
    procs.push(await startServe(['examples/socketio-chat.ts', '--listen', address, '--workers', '1']));
    await chatThrough(t, 'gatewire', address);
  });

  test('to the same app on node:http (protocol http)', async (t) => {
    const port = await freePort();
    const proc = startProcess(process.execPath, ['--import', path.join(ROOT, 'bin/typescript-loader.js'), 'test/apps/listen.ts', 'examples/socketio-chat.ts', String(port)], { cwd: ROOT });
    procs.push(proc);
    await waitForListen(`127.0.0.1:${port}`);
    await chatThrough(t, 'http', `127.0.0.1:${port}`);
  });
});
