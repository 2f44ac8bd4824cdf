// Connection lifecycle of the native session: GOAWAY drains (streams above the
// last id fail retryable, the rest complete), max concurrent streams
// (REFUSED_STREAM is retryable), PING round trips and dead-connection
// detection, and no leaked streams, timers or listeners after many cancels.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { test } from 'node:test';
import { ErrorCode, FrameType } from '../protocol/constants.ts';
import { ProtocolError } from '../protocol/errors.ts';
import { encodeRequestFrame, encodeReset, encodeSettings } from '../protocol/frame.ts';
import { getVar } from '../protocol/vars.ts';
import { GatewireSession, type GatewireStream, StreamResetError } from '../protocol/session.ts';
import { freePort } from './helpers/net.ts';
import { connectClient, fetchOn, rawPeer, readAll, startSessionServer, withTimeout } from './helpers/protocol-session.ts';

function errorOf(stream: GatewireStream): Promise<StreamResetError> {
  return withTimeout(once(stream, 'error') as Promise<[StreamResetError]>, 5000, `error on stream ${stream.id}`).then(([e]) => e);
}

/** Resolves on 'close' (events.once would reject on the 'error' that precedes it). */
function closed(emitter: NodeJS.EventEmitter, what: string): Promise<unknown[]> {
  return withTimeout(new Promise<unknown[]>((resolve) => emitter.once('close', (...args: unknown[]) => resolve(args))), 5000, what);
}

async function until(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('GOAWAY: streams above the last stream id fail retryable, the others complete, then the connection closes', { timeout: 15_000 }, async (t) => {
  const held: GatewireStream[] = [];
  const srv = await startSessionServer((stream, session) => {
    held.push(stream);
    // The third stream triggers a graceful shutdown: streams 4 and 5, already on the wire, are refused.
    if (stream.id === 3) session.goaway(ErrorCode.NO_ERROR, 'draining');
    setTimeout(() => {
      stream.respond(200, ['x-id', String(stream.id)]);
      stream.end(`body of ${stream.id}`);
    }, 100);
  });
  t.after(() => srv.close());
  const client = await connectClient(srv.connectOpts);
  t.after(() => client.destroy());

  const goaway = once(client, 'goaway');
  const streams = Array.from({ length: 5 }, (_, i) => client.request(['REQUEST_METHOD', 'GET', 'PATH_INFO', `/${i}`], { endStream: true }));
  assert.deepEqual(
    streams.map((s) => s.id),
    [1, 2, 3, 4, 5],
  );
  const refused = streams.slice(3).map(errorOf);
  const done = streams.slice(0, 3).map(async (s) => {
    const [status] = (await once(s, 'response')) as [number];
    return { status, body: (await readAll(s)).toString() };
  });

  const [info] = await withTimeout(goaway, 5000, 'goaway');
  assert.equal(info.lastStreamId, 3);
  assert.equal(info.code, ErrorCode.NO_ERROR);
  assert.equal(info.debug, 'draining');
  assert.equal(client.goingAway, true);
  assert.equal(client.availableStreams, 0);

  for (const err of await Promise.all(refused)) {
    assert.ok(err instanceof StreamResetError);
    assert.equal(err.retryable, true, 'never processed: retryable');
    assert.equal(err.code, ErrorCode.REFUSED_STREAM);
  }
  const results = await withTimeout(Promise.all(done), 5000, 'streams below lastStreamId');
  assert.deepEqual(results, [
    { status: 200, body: 'body of 1' },
    { status: 200, body: 'body of 2' },
    { status: 200, body: 'body of 3' },
  ]);
  assert.equal(held.length, 3, 'the server never processed streams 4 and 5');

  // A request after GOAWAY is refused locally, retryable on another connection.
  const late = client.request(['REQUEST_METHOD', 'GET'], { endStream: true });
  const lateErr = await errorOf(late);
  assert.equal(lateErr.retryable, true);
  assert.equal(lateErr.remote, false);

  // Idle after the drain: both sides close.
  await withTimeout(once(client, 'close'), 5000, 'client close after drain');
  await until(() => srv.sessions[0].destroyed, 'server session closed');
});

test('close() drains in-flight streams and resolves once the socket is closed', { timeout: 10_000 }, async (t) => {
  const srv = await startSessionServer((stream) => {
    setTimeout(() => stream.respond(200, [], { endStream: true }), 50);
  });
  t.after(() => srv.close());
  const client = await connectClient(srv.connectOpts);
  const inflight = fetchOn(client, ['REQUEST_METHOD', 'GET']);
  await new Promise((r) => setTimeout(r, 10));
  // The server side closes gracefully: its in-flight stream still completes.
  await withTimeout(Promise.all([srv.sessions[0].close(), inflight]), 5000, 'graceful close');
  assert.equal((await inflight).status, 200);
  await withTimeout(once(client, 'close'), 5000, 'client closed');
  assert.equal(client.destroyed, true);
});

test('max concurrent streams: the client never exceeds the server limit, and a REFUSED_STREAM reset is retryable', { timeout: 10_000 }, async (t) => {
  const held: GatewireStream[] = [];
  const srv = await startSessionServer((stream) => held.push(stream), { maxConcurrentStreams: 2 });
  t.after(() => srv.close());
  const client = await connectClient(srv.connectOpts);
  t.after(() => client.destroy());
  assert.equal(client.peerSettings?.maxConcurrentStreams, 2);
  assert.equal(client.availableStreams, 2);
  const a = client.request(['REQUEST_METHOD', 'GET'], { endStream: true });
  const b = client.request(['REQUEST_METHOD', 'GET'], { endStream: true });
  assert.equal(client.availableStreams, 0);
  const c = client.request(['REQUEST_METHOD', 'GET'], { endStream: true });
  const err = await errorOf(c);
  assert.equal(err.code, ErrorCode.REFUSED_STREAM);
  assert.equal(err.retryable, true);
  await until(() => held.length === 2, 'two server streams');
  for (const s of held) s.respond(204, [], { endStream: true });
  await Promise.all([a, b].map((s) => once(s, 'response')));
  await until(() => client.availableStreams === 2, 'slots freed');
});

test('a server over its limit answers REFUSED_STREAM and keeps the connection; the client reports it retryable', { timeout: 10_000 }, async (t) => {
  // Server side: a raw client that ignores the limit.
  const srv = await startSessionServer(() => {}, { maxConcurrentStreams: 1 });
  t.after(() => srv.close());
  const socket = net.connect(srv.connectOpts);
  await once(socket, 'connect');
  const raw = rawPeer(socket);
  t.after(() => socket.destroy());
  raw.send(
    encodeSettings({ maxConcurrentStreams: 10, initialStreamWindow: 65535, initialConnectionWindow: 65535 }),
    encodeRequestFrame(1, ['REQUEST_METHOD', 'GET'], true) as Buffer,
    encodeRequestFrame(2, ['REQUEST_METHOD', 'GET'], true) as Buffer,
  );
  const reset = await raw.waitFrame((f) => f.type === FrameType.RESET);
  assert.equal(reset.streamId, 2);
  assert.equal(reset.payload.readUInt32LE(0), ErrorCode.REFUSED_STREAM);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(raw.frames.filter((f) => f.type === FrameType.GOAWAY).length, 0, 'a refused stream is not a connection error');
  assert.equal(srv.sessions[0].activeStreams, 1);

  // Client side: a raw server that refuses every stream.
  const fake = net.createServer((s) => {
    const peer = rawPeer(s);
    peer.send(encodeSettings({ maxConcurrentStreams: 100, initialStreamWindow: 65535, initialConnectionWindow: 65535 }));
    peer.waitFrame((f) => f.type === FrameType.REQUEST).then((f) => peer.send(encodeReset(f.streamId, ErrorCode.REFUSED_STREAM)), () => {});
  });
  fake.listen(0, '127.0.0.1');
  await once(fake, 'listening');
  t.after(() => fake.close());
  const client = await connectClient({ port: (fake.address() as net.AddressInfo).port, host: '127.0.0.1' });
  t.after(() => client.destroy());
  const stream = client.request(['REQUEST_METHOD', 'GET'], { endStream: true });
  const aborted = once(stream, 'aborted');
  const err = await errorOf(stream);
  await aborted;
  assert.equal(err.code, ErrorCode.REFUSED_STREAM);
  assert.equal(err.remote, true);
  assert.equal(err.retryable, true);
});

test('PING measures the round trip; automatic pings keep a live connection', { timeout: 10_000 }, async (t) => {
  const srv = await startSessionServer(() => {});
  t.after(() => srv.close());
  const client = await connectClient(srv.connectOpts, { pingIntervalMs: 30, pingTimeoutMs: 2000 });
  t.after(() => client.destroy());
  const pinged = once(client, 'ping');
  const rtt = await withTimeout(client.ping(), 5000, 'ping');
  assert.equal(typeof rtt, 'number');
  assert.ok(rtt >= 0 && rtt < 2000, `rtt ${rtt}`);
  assert.equal((await pinged)[0], rtt);
  // Either side may ping.
  assert.ok((await withTimeout(srv.sessions[0].ping(), 5000, 'server ping')) >= 0);
  let auto = 0;
  client.on('ping', () => auto++);
  await until(() => auto >= 3, 'automatic pings', 5000);
  assert.equal(client.destroyed, false);
});

test('a peer that stops answering is detected by the ping timeout and its session destroyed', { timeout: 10_000 }, async (t) => {
  const srv = await startSessionServer(() => {});
  t.after(() => srv.close());
  const client = await connectClient(srv.connectOpts, { pingIntervalMs: 50, pingTimeoutMs: 300 });
  t.after(() => client.destroy());
  const errors: Error[] = [];
  client.on('error', (e) => errors.push(e));
  const stream = client.request(['REQUEST_METHOD', 'GET'], { endStream: true });
  await until(() => srv.sessions.length === 1 && srv.sessions[0].activeStreams === 1, 'server stream');
  // The server process is "hung": it no longer reads its socket, so nothing answers the PING.
  srv.sockets[0].pause();
  const streamErr = errorOf(stream);
  const [hadError] = await closed(client, 'client closed by ping timeout');
  assert.equal(hadError, true);
  assert.equal(client.destroyed, true);
  assert.ok(errors[0] instanceof ProtocolError);
  assert.equal((errors[0] as ProtocolError).code, ErrorCode.TIMEOUT);
  const err = await streamErr;
  assert.equal(err.retryable, false, 'the request reached the server: not retryable');
  assert.equal(err.code, ErrorCode.TIMEOUT);
});

function resources(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const r of process.getActiveResourcesInfo()) counts[r] = (counts[r] ?? 0) + 1;
  return counts;
}

test('1,000 open/cancel cycles leave no active streams, timers or listeners', { timeout: 20_000 }, async (t) => {
  let serverStreams = 0;
  let serverAborted = 0;
  const arrived = new Map<number, () => void>();
  const srv = await startSessionServer((stream) => {
    arrived.get(stream.id)?.();
    if (getVar(stream.vars, 'PATH_INFO') === '/final') {
      stream.respond(200, ['x-final', 'yes'], { endStream: true });
      return;
    }
    serverStreams++;
    stream.on('aborted', () => serverAborted++);
    // Every other stream is cancelled by the server instead of the client.
    if (stream.id % 2 === 0) stream.reset();
  });
  t.after(() => srv.close());
  const client = await connectClient(srv.connectOpts, { pingIntervalMs: 1000 });
  t.after(() => client.destroy());
  const socket = srv.sockets[0];
  const listenersBefore = socket.eventNames().map((e) => `${String(e)}:${socket.listenerCount(e)}`);
  await new Promise((r) => setTimeout(r, 20));
  const before = resources();

  for (let i = 0; i < 1000; i++) {
    const stream = client.request(['REQUEST_METHOD', 'POST', 'PATH_INFO', `/${i}`]);
    const atServer = new Promise<void>((resolve) => arrived.set(stream.id, resolve));
    stream.on('error', () => {});
    stream.write('x');
    if (stream.id % 2 === 0) {
      await closed(stream, `server cancel of ${stream.id}`);
      arrived.delete(stream.id);
    } else {
      await withTimeout(atServer, 5000, `server stream ${stream.id}`);
      arrived.delete(stream.id);
      stream.reset();
    }
  }
  await until(() => serverAborted === 500 && srv.sessions[0].activeStreams === 0, 'server side cancelled', 5000);
  assert.equal(client.activeStreams, 0);
  assert.equal(serverStreams, 1000);
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(resources(), before, 'active handles and timers are unchanged');
  assert.deepEqual(
    socket.eventNames().map((e) => `${String(e)}:${socket.listenerCount(e)}`),
    listenersBefore,
    'no per-stream listeners on the socket',
  );

  // A last request proves the connection is still healthy.
  const res = await withTimeout(fetchOn(client, ['REQUEST_METHOD', 'GET', 'PATH_INFO', '/final']), 5000, 'final request');
  assert.equal(getVar(res.headers, 'x-final'), 'yes');
});

test('destroy() fails every stream, clears its timers and listeners, and emits close', { timeout: 10_000 }, async (t) => {
  const srv = await startSessionServer(() => {});
  t.after(() => srv.close());
  await new Promise((r) => setTimeout(r, 20));
  const before = resources();
  const socket = net.connect(srv.connectOpts);
  const ownListeners = (e: string) => socket.listenerCount(e);
  const baseline = Object.fromEntries(['data', 'drain', 'end', 'close'].map((e) => [e, ownListeners(e)]));
  const client = new GatewireSession(socket, { role: 'client', pingIntervalMs: 100 });
  await once(client, 'ready');
  const streams = Array.from({ length: 5 }, () => client.request(['REQUEST_METHOD', 'GET'], { endStream: true }));
  const errors = streams.map(errorOf);
  const pending = client.ping(); // never answered in time: rejected by destroy
  client.destroy();
  await assert.rejects(pending);
  for (const err of await Promise.all(errors)) assert.ok(err instanceof StreamResetError);
  await closed(client, 'close');
  assert.equal(client.activeStreams, 0);
  for (const e of ['data', 'drain', 'end', 'close']) assert.equal(socket.listenerCount(e), baseline[e], `socket ${e} listeners`);
  await until(() => srv.sessions.length === 1 && srv.sessions[0].destroyed, 'server saw the close');
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(resources(), before);
});

test('a connection that cannot be established fails its queued streams as retryable', { timeout: 10_000 }, async () => {
  const port = await freePort();
  const socket = net.connect(port, '127.0.0.1');
  const client = new GatewireSession(socket, { role: 'client' });
  const errors: Error[] = [];
  client.on('error', (e) => errors.push(e));
  assert.equal(client.availableStreams > 0, true, 'a connecting session takes streams');
  const stream = client.request(['REQUEST_METHOD', 'POST']);
  stream.write('body');
  const err = await errorOf(stream);
  assert.equal(err.retryable, true, 'the REQUEST was never written');
  assert.equal(err.remote, false);
  assert.equal((err.cause as NodeJS.ErrnoException).code, 'ECONNREFUSED');
  const [hadError] = await closed(client, 'close');
  assert.equal(hadError, true);
  assert.equal((errors[0] as NodeJS.ErrnoException).code, 'ECONNREFUSED');
});
