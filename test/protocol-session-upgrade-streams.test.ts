// Upgrade streams (PROTOCOL.md 4.3): a REQUEST with UPGRADE answered 101 is a
// tunnel whose two directions carry any bytes under flow control and end on
// their own; a declined upgrade is an ordinary exchange; the rules a peer can
// break are stream errors that leave the connection and its other streams alone.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import fc from 'fast-check';
import { ErrorCode, Flag, FrameType } from '../protocol/constants.ts';
import { encodeFrame, encodeRequestFrame } from '../protocol/frame.ts';
import type { GatewireStream } from '../protocol/session.ts';
import { getVar } from '../protocol/vars.ts';
import { connectClient, rawClient, readAll, startSessionServer, withTimeout } from './helpers/protocol-session.ts';

async function closed(stream: GatewireStream): Promise<void> {
  if (!stream.closed) await withTimeout(once(stream, 'close'), 5000, 'stream close');
}

const UPGRADE_VARS = ['REQUEST_METHOD', 'GET', 'PATH_INFO', '/ws', 'HTTP_UPGRADE', 'websocket', 'HTTP_CONNECTION', 'Upgrade'];

/** A server that accepts /ws with 101 and echoes, answers /decline with 426, and keeps /slow unread. */
async function tunnelServer(t: import('node:test').TestContext, opts: { initialStreamWindow?: number; maxRequestBody?: number } = {}) {
  const slow: GatewireStream[] = [];
  const srv = await startSessionServer((stream) => {
    stream.on('error', () => {});
    const path = getVar(stream.vars, 'PATH_INFO');
    if (path === '/hold') return;
    if (path === '/decline') {
      stream.respond(426, ['content-length', '0'], { endStream: true });
      return;
    }
    stream.respond(101, ['upgrade', 'websocket']);
    if (path === '/slow') {
      stream.pause();
      slow.push(stream);
      return;
    }
    if (path === '/server-ends-first') {
      stream.end('bye');
      readAll(stream).then(
        (b) => slow.push(Object.assign(stream, { got: b })),
        () => {},
      );
      return;
    }
    stream.pipe(stream);
  }, opts);
  t.after(() => srv.close());
  return { srv, slow };
}

test('a 101 makes the stream a tunnel: bytes both ways, each side half-closes on its own', async (t) => {
  const { srv } = await tunnelServer(t);
  const client = await connectClient(srv.connectOpts);
  t.after(() => client.destroy());
  const stream = client.request(UPGRADE_VARS, { upgrade: true, endStream: true });
  const [status, headers] = (await once(stream, 'response')) as [number, string[]];
  assert.equal(status, 101);
  assert.deepEqual(headers, ['upgrade', 'websocket']);
  assert.equal(stream.upgrade, true);
  assert.equal(stream.tunnel, true);
  const payload = Buffer.alloc(3 * 1024 * 1024, 7); // larger than every window: flow control in both directions
  stream.end(payload);
  const echoed = await withTimeout(readAll(stream), 10_000, 'echo');
  assert.equal(echoed.length, payload.length);
  assert.ok(echoed.equals(payload));
  await closed(stream);
  assert.equal(stream.resetError, null);
  assert.equal(client.activeStreams, 0);
});

test('the server may end its direction first; the client keeps sending and is not reset', async (t) => {
  const { srv, slow } = await tunnelServer(t);
  const client = await connectClient(srv.connectOpts);
  t.after(() => client.destroy());
  const stream = client.request([...UPGRADE_VARS.slice(0, 2), 'PATH_INFO', '/server-ends-first'], { upgrade: true });
  await once(stream, 'response');
  const fromServer = await readAll(stream);
  assert.equal(fromServer.toString(), 'bye');
  stream.write('still ');
  await new Promise((r) => setTimeout(r, 50));
  stream.end('talking');
  await closed(stream);
  assert.equal(stream.resetError, null);
  while (slow.length === 0) await new Promise((r) => setTimeout(r, 5));
  assert.equal((slow[0] as unknown as { got: Buffer }).got.toString(), 'still talking');
});

test('a declined upgrade is an ordinary exchange and closes cleanly', async (t) => {
  const { srv } = await tunnelServer(t);
  const client = await connectClient(srv.connectOpts);
  t.after(() => client.destroy());
  const stream = client.request([...UPGRADE_VARS.slice(0, 2), 'PATH_INFO', '/decline'], { upgrade: true });
  const [status] = (await once(stream, 'response')) as [number];
  assert.equal(status, 426);
  assert.equal(stream.tunnel, false);
  assert.equal((await readAll(stream)).length, 0);
  stream.end();
  await closed(stream);
  assert.equal(client.activeStreams, 0);
});

test('tunnel bytes are no request body: maxRequestBody does not cut a tunnel', async (t) => {
  const { srv } = await tunnelServer(t, { maxRequestBody: 1024 });
  const client = await connectClient(srv.connectOpts);
  t.after(() => client.destroy());
  const stream = client.request(UPGRADE_VARS, { upgrade: true });
  await once(stream, 'response');
  const payload = Buffer.alloc(64 * 1024, 1);
  stream.end(payload);
  assert.equal((await readAll(stream)).length, payload.length);
});

test('a slow reader stalls only its own tunnel; the other tunnels on the connection flow', async (t) => {
  const { srv, slow } = await tunnelServer(t, { initialStreamWindow: 16 * 1024 });
  const client = await connectClient(srv.connectOpts);
  t.after(() => client.destroy());
  const stuck = client.request([...UPGRADE_VARS.slice(0, 2), 'PATH_INFO', '/slow'], { upgrade: true });
  await once(stuck, 'response');
  let accepted = 0;
  const chunk = Buffer.alloc(8 * 1024);
  while (stuck.write(chunk)) accepted += chunk.length;
  // The writable side reports backpressure: the tunnel holds at most its window plus the stream's buffers.
  await new Promise((r) => setTimeout(r, 100));
  assert.ok(stuck.writableLength > 0, 'the stalled tunnel holds bytes back');
  const live = client.request(UPGRADE_VARS, { upgrade: true });
  await once(live, 'response');
  const payload = Buffer.alloc(512 * 1024, 3);
  live.end(payload);
  assert.equal((await withTimeout(readAll(live), 10_000, 'live tunnel echo')).length, payload.length);
  // The slow reader resumes and gets every byte.
  const server = slow[0];
  let got = 0;
  server.on('data', (c: Buffer) => {
    got += c.length;
  });
  server.resume();
  while (got < accepted) await new Promise((r) => setTimeout(r, 10));
  stuck.destroy();
});

test('peer violations of the upgrade rules are stream errors; the connection keeps serving', async (t) => {
  const { srv } = await tunnelServer(t);
  const peer = await rawClient(srv.connectOpts);
  t.after(() => peer.socket.destroy());
  // UPGRADE together with END_STREAM: nothing left to tunnel.
  const both = encodeRequestFrame(1, UPGRADE_VARS, true, true) as Buffer;
  assert.equal(both[3], Flag.UPGRADE | Flag.END_STREAM);
  peer.send(both);
  const r1 = await peer.waitFrame((f) => f.type === FrameType.RESET && f.streamId === 1);
  assert.equal(r1.payload.readUInt32LE(0), ErrorCode.PROTOCOL_ERROR);
  // DATA before the 101 (the app has not answered yet).
  peer.send(encodeRequestFrame(3, [...UPGRADE_VARS.slice(0, 2), 'PATH_INFO', '/hold'], false, true) as Buffer, encodeFrame(FrameType.DATA, 0, 3, Buffer.from('early')));
  const r3 = await peer.waitFrame((f) => f.type === FrameType.RESET && f.streamId === 3);
  assert.equal(r3.payload.readUInt32LE(0), ErrorCode.PROTOCOL_ERROR);
  // The connection still works.
  peer.send(encodeRequestFrame(5, UPGRADE_VARS, false, true) as Buffer);
  const ok = await peer.waitFrame((f) => f.type === FrameType.RESPONSE && f.streamId === 5);
  assert.equal(ok.payload.readUInt16LE(0), 101);
  assert.equal(
    peer.frames.some((f) => f.type === FrameType.GOAWAY),
    false,
  );
});

test('a 101 on a stream that did not ask for an upgrade: respond() refuses it', async (t) => {
  let refused: unknown = null;
  const srv = await startSessionServer((stream) => {
    try {
      stream.respond(101, []);
    } catch (err) {
      refused = err;
      stream.respond(200, [], { endStream: true });
    }
  });
  t.after(() => srv.close());
  const client = await connectClient(srv.connectOpts);
  t.after(() => client.destroy());
  const s = client.request(['REQUEST_METHOD', 'GET'], { endStream: true });
  const [status] = (await once(s, 'response')) as [number];
  assert.equal(status, 200);
  assert.match(String(refused), /asked for an upgrade/);
});

test('property: any number and sizes of writes through a tunnel come back byte for byte, and the stream closes clean', async (t) => {
  const { srv } = await tunnelServer(t, { initialStreamWindow: 4096 });
  const client = await connectClient(srv.connectOpts, { initialStreamWindow: 4096 });
  t.after(() => client.destroy());
  await fc.assert(
    fc.asyncProperty(fc.array(fc.integer({ min: 0, max: 20_000 }), { maxLength: 8 }), fc.integer({ min: 0, max: 255 }), async (sizes, fill) => {
      const stream = client.request(UPGRADE_VARS, { upgrade: true });
      await once(stream, 'response');
      const pieces = sizes.map((n, i) => Buffer.alloc(n, (fill + i) & 0xff));
      const reading = readAll(stream);
      for (const piece of pieces) {
        if (piece.length > 0 && !stream.write(piece)) await once(stream, 'drain');
      }
      stream.end();
      const got = await withTimeout(reading, 10_000, 'tunnel echo');
      assert.ok(got.equals(Buffer.concat(pieces)));
      await closed(stream);
      assert.equal(stream.resetError, null);
      return client.activeStreams === 0;
    }),
    { numRuns: 40 },
  );
});
