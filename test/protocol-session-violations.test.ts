// Protocol violations from a peer end only that peer's connection: it gets a
// GOAWAY carrying the right error code and is closed, the session reports a
// typed ProtocolError, nothing throws, and another connection to the same
// server keeps working throughout (including a stream held open across all of
// them). Stream-level faults RESET just the stream, as the spec says.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { test } from 'node:test';
import { ErrorCode, FrameType, MAX_WINDOW } from '../protocol/constants.ts';
import { ProtocolError } from '../protocol/errors.ts';
import { encodeFrame, encodeRequestFrame, encodeResponseFrame, encodeSettings, encodeWindow } from '../protocol/frame.ts';
import { getVar } from '../protocol/vars.ts';
import { type GatewireSession, type GatewireStream, StreamResetError } from '../protocol/session.ts';
import { connectClient, fetchOn, goawayOf, type RawPeer, rawClient, rawPeer, readAll, startSessionServer, withTimeout } from './helpers/protocol-session.ts';

const STREAM_WINDOW = 1024;

async function setup(t: import('node:test').TestContext) {
  const sessionErrors = new Map<GatewireSession, Error[]>();
  const held: GatewireStream[] = [];
  const srv = await startSessionServer(
    (stream) => {
      stream.on('error', () => {});
      if (getVar(stream.vars, 'PATH_INFO') === '/hold') {
        held.push(stream);
        return;
      }
      readAll(stream).then(
        (body) => {
          stream.respond(200, ['x-len', String(body.length)]);
          stream.end(body);
        },
        () => {},
      );
    },
    {
      initialStreamWindow: STREAM_WINDOW,
      onSession(s) {
        const errors: Error[] = [];
        sessionErrors.set(s, errors);
        s.on('error', (e) => errors.push(e));
      },
    },
  );
  t.after(() => srv.close());
  // A well-behaved neighbour with a stream open across every violation.
  const bystander = await connectClient(srv.connectOpts);
  t.after(() => bystander.destroy());
  const longStream = bystander.request(['REQUEST_METHOD', 'GET', 'PATH_INFO', '/hold'], { endStream: true });
  while (held.length === 0) await new Promise((r) => setTimeout(r, 5));
  const longServerSide = held[0];
  return { srv, bystander, longStream, longServerSide, sessionErrors };
}

async function expectGoaway(peer: RawPeer, code: number, lastStreamId: number): Promise<void> {
  const frame = await peer.waitFrame((f) => f.type === FrameType.GOAWAY);
  const info = goawayOf(frame);
  assert.equal(info.code, code, `GOAWAY code ${info.code} (${info.debug})`);
  assert.equal(info.lastStreamId, lastStreamId);
  assert.ok(info.debug.length > 0, 'the debug text says what went wrong');
  await withTimeout(peer.closed, 5000, 'violating connection closed');
}

const connectionErrors: Array<{ name: string; code: number; last: number; frames: () => Buffer[] }> = [
  {
    name: 'DATA on a stream that was never opened',
    code: ErrorCode.PROTOCOL_ERROR,
    last: 0,
    frames: () => [encodeFrame(FrameType.DATA, 0, 7, Buffer.from('x'))],
  },
  {
    name: 'DATA beyond the stream window the server granted',
    code: ErrorCode.FLOW_CONTROL_ERROR,
    last: 1,
    frames: () => [encodeRequestFrame(1, ['PATH_INFO', '/hold'], false) as Buffer, encodeFrame(FrameType.DATA, 0, 1, Buffer.alloc(STREAM_WINDOW + 1))],
  },
  {
    name: 'WINDOW pushing the connection window above 2^31-1',
    code: ErrorCode.FLOW_CONTROL_ERROR,
    last: 0,
    frames: () => [encodeWindow(0, MAX_WINDOW)],
  },
  {
    name: 'WINDOW with a zero increment',
    code: ErrorCode.PROTOCOL_ERROR,
    last: 0,
    frames: () => [encodeWindow(0, 0)],
  },
  {
    name: 'a REQUEST whose stream id does not increase',
    code: ErrorCode.PROTOCOL_ERROR,
    last: 5,
    frames: () => [encodeRequestFrame(5, ['PATH_INFO', '/hold'], true) as Buffer, encodeRequestFrame(3, ['PATH_INFO', '/hold'], true) as Buffer],
  },
  {
    name: 'garbage bytes after the preface',
    code: ErrorCode.PROTOCOL_ERROR,
    last: 0,
    frames: () => [Buffer.from('\xee\x10\x00\x00garbage garbage garbage', 'latin1')],
  },
  {
    name: 'a RESPONSE sent by a client',
    code: ErrorCode.PROTOCOL_ERROR,
    last: 0,
    frames: () => [encodeResponseFrame(1, 200, [], true) as Buffer],
  },
];

test('each connection-level violation gets GOAWAY with its code and closes only that connection', { timeout: 20_000 }, async (t) => {
  const { srv, bystander, longStream, longServerSide, sessionErrors } = await setup(t);
  for (const v of connectionErrors) {
    const peer = await rawClient(srv.connectOpts);
    const session = srv.sessions[srv.sessions.length - 1];
    peer.send(...v.frames());
    await expectGoaway(peer, v.code, v.last);
    const errors = sessionErrors.get(session)!;
    assert.ok(errors[0] instanceof ProtocolError, v.name);
    assert.equal((errors[0] as ProtocolError).code, v.code, v.name);
    assert.equal(session.destroyed, true);
    // The neighbour is unaffected.
    const res = await withTimeout(fetchOn(bystander, ['REQUEST_METHOD', 'POST', 'PATH_INFO', '/echo'], Buffer.from(v.name)), 5000, `bystander after ${v.name}`);
    assert.equal(res.body.toString(), v.name);
  }
  // The long stream held across every violation still completes.
  longServerSide.respond(200, [], { endStream: true });
  const [status] = (await withTimeout(once(longStream, 'response'), 5000, 'long stream')) as [number];
  assert.equal(status, 200);
  assert.equal(bystander.destroyed, false);
});

test('an unsupported protocol version in the preface gets GOAWAY(UNSUPPORTED_VERSION)', { timeout: 10_000 }, async (t) => {
  const { srv, bystander } = await setup(t);
  const socket = net.connect(srv.connectOpts);
  await once(socket, 'connect');
  const peer = rawPeer(socket);
  peer.send(encodeSettings({ version: 2, maxConcurrentStreams: 1, initialStreamWindow: 1, initialConnectionWindow: 1 }));
  // The server's own SETTINGS precedes the GOAWAY.
  await expectGoaway(peer, ErrorCode.UNSUPPORTED_VERSION, 0);
  assert.equal((await fetchOn(bystander, ['REQUEST_METHOD', 'GET'])).status, 200);
});

test('stream-level faults reset only the stream: DATA after END_STREAM, stream window overflow', { timeout: 10_000 }, async (t) => {
  const { srv } = await setup(t);
  const peer = await rawClient(srv.connectOpts);
  t.after(() => peer.socket.destroy());
  // DATA after END_STREAM on an active stream → RESET(STREAM_CLOSED).
  peer.send(encodeRequestFrame(1, ['PATH_INFO', '/hold'], true) as Buffer, encodeFrame(FrameType.DATA, 0, 1, Buffer.from('late')));
  const reset1 = await peer.waitFrame((f) => f.type === FrameType.RESET && f.streamId === 1);
  assert.equal(reset1.payload.readUInt32LE(0), ErrorCode.STREAM_CLOSED);
  // A stream window pushed above 2^31-1 → RESET(FLOW_CONTROL_ERROR).
  peer.send(encodeRequestFrame(3, ['PATH_INFO', '/hold'], true) as Buffer, encodeWindow(3, MAX_WINDOW));
  const reset3 = await peer.waitFrame((f) => f.type === FrameType.RESET && f.streamId === 3);
  assert.equal(reset3.payload.readUInt32LE(0), ErrorCode.FLOW_CONTROL_ERROR);
  // The connection itself is fine: a normal request on it is answered.
  peer.send(encodeRequestFrame(5, ['PATH_INFO', '/echo'], true) as Buffer);
  const response = await peer.waitFrame((f) => f.type === FrameType.RESPONSE && f.streamId === 5);
  assert.equal(response.payload.readUInt16LE(0), 200);
  assert.equal(peer.frames.filter((f) => f.type === FrameType.GOAWAY).length, 0);
});

test('a client session facing a broken server reports a ProtocolError, fails its streams and sends GOAWAY', { timeout: 10_000 }, async (t) => {
  let serverPeer: RawPeer | null = null;
  const fake = net.createServer((s) => {
    serverPeer = rawPeer(s);
    serverPeer.send(encodeSettings({ maxConcurrentStreams: 10, initialStreamWindow: 65535, initialConnectionWindow: 65535 }));
    serverPeer
      .waitFrame((f) => f.type === FrameType.REQUEST)
      .then(() => serverPeer!.send(Buffer.from([0xee, 0, 0, 0, 0, 0, 0, 0])), () => {});
  });
  fake.listen(0, '127.0.0.1');
  await once(fake, 'listening');
  t.after(() => fake.close());
  const client = await connectClient({ port: (fake.address() as net.AddressInfo).port, host: '127.0.0.1' });
  t.after(() => client.destroy());
  const errors: Error[] = [];
  client.on('error', (e) => errors.push(e));
  const stream = client.request(['REQUEST_METHOD', 'GET'], { endStream: true });
  const [err] = (await withTimeout(once(stream, 'error'), 5000, 'stream error')) as [StreamResetError];
  assert.ok(err instanceof StreamResetError);
  assert.equal(err.code, ErrorCode.PROTOCOL_ERROR);
  assert.equal(err.retryable, false);
  assert.ok(errors[0] instanceof ProtocolError);
  const goaway = await serverPeer!.waitFrame((f) => f.type === FrameType.GOAWAY);
  assert.equal(goawayOf(goaway).code, ErrorCode.PROTOCOL_ERROR);
  await withTimeout(serverPeer!.closed, 5000, 'connection closed by the client');
  assert.equal(client.destroyed, true);
});
