// WebSocket apps on `gatewire serve`, reached over native upgrade streams
// (one native connection, through a minimal HTTP → native gateway) by the real
// `ws` client: a ws WebSocketServer on an exported http.Server, unchanged,
// and a Fetch app using info.upgradeWebSocket. Echo of text and binary from
// 1 byte to 16 MiB, subprotocols, permessage-deflate, ping/pong, close codes
// both ways, a client that vanishes, 200 sockets on one connection, and the
// graceful stop that closes with 1001 only after the graceful timeout.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, test } from 'node:test';
import { startServe } from './helpers/appserver-clients.ts';
import { type NativeGateway, startNativeGateway } from './helpers/native-gateway.ts';
import { tempDir } from './helpers/net.ts';
import type { Proc } from './helpers/procs.ts';
import type WebSocket from 'ws';
import { eventually, nextMessage, openWs as open } from './helpers/websocket-clients.ts';

const SIZES = [1, 125, 126, 65_535, 65_536, 1024 * 1024, 16 * 1024 * 1024];

async function stats(gw: NativeGateway): Promise<any> {
  const res = await fetch(`${gw.url}/stats`);
  return res.json();
}

for (const app of [
  { name: 'ws on an exported http.Server', file: 'test/apps/ws-node-server.ts' },
  { name: 'Fetch app with info.upgradeWebSocket', file: 'test/apps/ws-fetch.ts' },
]) {
  describe(`${app.name} → gatewire serve over native upgrade streams`, { timeout: 120_000 }, () => {
    const { dir, cleanup } = tempDir('gw-ws-');
    let proc: Proc;
    let gw: NativeGateway;
    let wsUrl: string;

    before(async () => {
      proc = await startServe([app.file, '--listen', `unix:${dir}/a.sock`, '--workers', '0', '--max-streams', '256']);
      gw = await startNativeGateway(`unix:${dir}/a.sock`);
      wsUrl = `${gw.url.replace('http', 'ws')}/ws`;
    });

    after(async () => {
      await gw?.close();
      const code = await proc?.stop(10_000);
      cleanup();
      assert.equal(code, 0, proc?.output().slice(-3000));
    });

    test('text and binary messages from 1 byte to 16 MiB come back unchanged', async () => {
      const ws = await open(wsUrl);
      for (const size of SIZES) {
        const bin = Buffer.alloc(size);
        for (let i = 0; i < size; i += 4096) bin[i] = (i / 4096) & 0xff;
        ws.send(bin);
        const b = await nextMessage(ws);
        assert.equal(b.isBinary, true);
        assert.ok(b.data.equals(bin), `binary ${size}`);
        const text = 'é'.repeat(Math.max(1, size >> 1)).slice(0, Math.max(1, size >> 1));
        ws.send(text);
        const t = await nextMessage(ws);
        assert.equal(t.isBinary, false);
        assert.equal(t.data.toString(), text, `text ${size}`);
      }
      ws.close(1000);
      await once(ws, 'close');
    });

    test('subprotocol, permessage-deflate, a cookie on the 101, ping/pong', async () => {
      const ws = await open(wsUrl, ['chat.v1', 'chat.v2'], { perMessageDeflate: true });
      assert.equal(ws.protocol, 'chat.v2');
      assert.match(ws.extensions, /permessage-deflate/);
      if (app.file.includes('fetch')) {
        // Headers the Fetch app set on its response ride on the 101.
        const headers = (ws as WebSocket & { upgradeHeaders?: Record<string, unknown> }).upgradeHeaders;
        assert.deepEqual(headers?.['set-cookie'], ['ws=1; Path=/']);
      }
      const big = Buffer.alloc(256 * 1024, 'a');
      ws.send(big);
      assert.ok((await nextMessage(ws)).data.equals(big));
      ws.ping(Buffer.from('are you there'));
      const [pong] = await once(ws, 'pong');
      assert.equal(pong.toString(), 'are you there');
      ws.close(1000);
      await once(ws, 'close');
      const bare = await open(wsUrl);
      assert.equal(bare.protocol, '');
      bare.close();
      await once(bare, 'close');
    });

    test('close codes both ways', async () => {
      const a = await open(wsUrl);
      a.send('close:4001:bye from the app');
      const [code, reason] = await once(a, 'close');
      assert.equal(code, 4001);
      assert.equal(reason.toString(), 'bye from the app');
      const b = await open(wsUrl);
      b.close(4002, 'bye from the client');
      await once(b, 'close');
      await eventually(async () => (await stats(gw)).closes.includes(4002), 'the app saw close code 4002');
    });

    test('a client that vanishes (TCP RST): the app sees the close, nothing stays open', async () => {
      const before = await stats(gw);
      const sockets = await Promise.all(Array.from({ length: 5 }, () => open(wsUrl)));
      await eventually(async () => (await stats(gw)).open === before.open + 5, 'five open');
      for (const ws of sockets) (ws as unknown as { _socket: import('node:net').Socket })._socket.resetAndDestroy();
      await eventually(async () => (await stats(gw)).open === before.open, 'the app saw every socket close');
      await eventually(async () => gw.session.activeStreams === 0, 'no stream left on the native connection');
    });

    test('200 concurrent sockets on one native connection', async () => {
      const sockets = await Promise.all(Array.from({ length: 200 }, () => open(wsUrl)));
      assert.equal(gw.session.activeStreams, 200);
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
      await eventually(async () => gw.session.activeStreams === 0, 'every stream closed');
    });
  });
}

test('SIGTERM: open WebSockets are kept through the graceful timeout, then closed with 1001', { timeout: 60_000 }, async () => {
  const { dir, cleanup } = tempDir('gw-ws-');
  for (const file of ['test/apps/ws-node-server.ts', 'test/apps/ws-fetch.ts']) {
    const proc = await startServe([file, '--listen', `unix:${dir}/b.sock`, '--workers', '1', '--graceful-timeout', '2']);
    const gw = await startNativeGateway(`unix:${dir}/b.sock`);
    try {
      const sockets = await Promise.all(Array.from({ length: 10 }, () => open(`${gw.url.replace('http', 'ws')}/ws`)));
      const closes = sockets.map((ws) => once(ws, 'close').then(([code]) => ({ code: code as number, at: Date.now() })));
      const start = Date.now();
      proc.kill('SIGTERM');
      // Still working during the graceful period.
      await new Promise((r) => setTimeout(r, 1000));
      sockets[0].send('still here');
      assert.equal((await nextMessage(sockets[0])).data.toString(), 'still here');
      const results = await Promise.all(closes);
      for (const r of results) {
        assert.equal(r.code, 1001, file);
        assert.ok(r.at - start >= 1900, `${file}: closed after ${r.at - start} ms, before the 2 s graceful timeout`);
      }
      assert.equal(await proc.exited, 0, proc.output().slice(-2000));
    } finally {
      await gw.close();
      proc.kill('SIGKILL');
    }
  }
  cleanup();
});
