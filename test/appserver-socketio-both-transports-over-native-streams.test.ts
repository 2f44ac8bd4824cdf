// socket.io, unchanged (examples/socketio-chat.ts: new Server(httpServer),
// the server exported), on `gatewire serve` over native streams: the
// long-polling transport rides on plain requests, the websocket transport on
// an upgrade stream, and the default client (polling, then upgraded to
// websocket) works too. Messages broadcast between clients on different
// transports; disconnects are seen by the server.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { io, type Socket } from 'socket.io-client';
import { startServe } from './helpers/appserver-clients.ts';
import { type NativeGateway, startNativeGateway } from './helpers/native-gateway.ts';
import { tempDir } from './helpers/net.ts';
import type { Proc } from './helpers/procs.ts';

const { dir, cleanup } = tempDir('gw-sio-');
let proc: Proc;
let gw: NativeGateway;

before(async () => {
  proc = await startServe(['examples/socketio-chat.ts', '--listen', `unix:${dir}/a.sock`, '--workers', '1']);
  gw = await startNativeGateway(`unix:${dir}/a.sock`);
});

after(async () => {
  await gw?.close();
  const code = await proc?.stop(10_000);
  cleanup();
  assert.equal(code, 0, proc?.output().slice(-3000));
});

function connect(transports: Array<'polling' | 'websocket'> | undefined): Promise<Socket> {
  const socket = io(gw.url, { transports, reconnection: false, timeout: 10_000 });
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', reject);
  });
}

async function clients(): Promise<number> {
  return ((await (await fetch(`${gw.url}/stats`)).json()) as { clients: number }).clients;
}

test('the page and the socket.io client script are served by the app', async () => {
  const page = await fetch(`${gw.url}/`);
  assert.equal(page.status, 200);
  assert.match(await page.text(), /socket\.io\.js/);
  const script = await fetch(`${gw.url}/socket.io/socket.io.js`);
  assert.equal(script.status, 200);
  assert.ok((await script.text()).length > 10_000);
});

test('polling-only, websocket-only and upgrading clients chat with each other', { timeout: 60_000 }, async () => {
  const polling = await connect(['polling']);
  const websocket = await connect(['websocket']);
  const upgrading = await connect(undefined);
  assert.equal(polling.io.engine.transport.name, 'polling');
  assert.equal(websocket.io.engine.transport.name, 'websocket');
  if (upgrading.io.engine.transport.name !== 'websocket') await new Promise((r) => upgrading.io.engine.once('upgrade', r));
  assert.equal(upgrading.io.engine.transport.name, 'websocket');
  assert.equal(await clients(), 3);

  const everyone = [polling, websocket, upgrading];
  for (const [i, sender] of everyone.entries()) {
    const received = everyone.map((s) => new Promise<{ name: string; text: string }>((resolve) => s.once('chat', resolve)));
    const acked = await sender.timeout(10_000).emitWithAck('chat', { name: `c${i}`, text: `hello from ${sender.io.engine.transport.name}` });
    assert.equal(typeof acked, 'number');
    for (const m of await Promise.all(received)) assert.deepEqual(m, { name: `c${i}`, text: `hello from ${sender.io.engine.transport.name}` });
  }
  // A larger message over each transport.
  const big = 'x'.repeat(200_000);
  const got = new Promise<{ text: string }>((resolve) => polling.once('chat', resolve));
  websocket.emit('chat', { name: 'big', text: big });
  assert.equal((await got).text.length, 1000); // the chat truncates: the round trip is what counts

  for (const s of everyone) s.disconnect();
  const deadline = Date.now() + 10_000;
  while ((await clients()) !== 0) {
    assert.ok(Date.now() < deadline, 'the server saw every client leave');
    await new Promise((r) => setTimeout(r, 50));
  }
});
