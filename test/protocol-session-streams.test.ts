// The native session carries requests and responses correctly: bodies both
// ways, many concurrent streams without mixing bytes, per-stream flow control
// (a slow reader stalls only its own stream, its sender stops at the window),
// and RESET in both directions.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { test } from 'node:test';
import { ErrorCode, FrameType } from '../protocol/constants.ts';
import { encodeSettings } from '../protocol/frame.ts';
import { getVar } from '../protocol/vars.ts';
import { detectProtocol, GatewireSession, type GatewireStream, SERVER_SOCKET_HIGH_WATER, StreamResetError } from '../protocol/session.ts';
import { connectClient, duplexPair, fetchOn, readAll, sha256, startSessionServer, withTimeout } from './helpers/protocol-session.ts';

/** Echo app: answers 200 with the request's method and path as headers and the request body as response body. */
function echoApp(stream: GatewireStream): void {
  readAll(stream).then(
    (body) => {
      stream.respond(200, ['x-method', getVar(stream.vars, 'REQUEST_METHOD') ?? '', 'x-path', getVar(stream.vars, 'PATH_INFO') ?? '', 'set-cookie', 'a=1', 'set-cookie', 'b=2']);
      stream.end(body);
    },
    () => {},
  );
}

for (const transport of ['tcp', 'unix'] as const) {
  test(`request/response round trip with a body both ways over ${transport}`, { timeout: 20_000 }, async (t) => {
    const srv = await startSessionServer(echoApp, { unix: transport === 'unix' });
    t.after(() => srv.close());
    const client = await connectClient(srv.connectOpts);
    t.after(() => client.destroy());

    const get = await fetchOn(client, ['REQUEST_METHOD', 'GET', 'PATH_INFO', '/hello']);
    assert.equal(get.status, 200);
    assert.deepEqual(get.headers, ['x-method', 'GET', 'x-path', '/hello', 'set-cookie', 'a=1', 'set-cookie', 'b=2']);
    assert.equal(get.body.length, 0);

    // Larger than the stream window and several MAX_FRAME_PAYLOADs: exercises splitting and credit.
    const body = randomBytes(1_500_000);
    const post = await fetchOn(client, ['REQUEST_METHOD', 'POST', 'PATH_INFO', '/upload'], body);
    assert.equal(post.status, 200);
    assert.equal(getVar(post.headers, 'x-method'), 'POST');
    assert.equal(sha256(post.body), sha256(body));
    assert.equal(client.activeStreams, 0);
    assert.equal(srv.sessions[0].activeStreams, 0);
  });
}

test('the session works over any Duplex (an in-memory pair), with bodiless responses', { timeout: 10_000 }, async (t) => {
  const [a, b] = duplexPair();
  const server = new GatewireSession(b, { role: 'server' });
  const client = new GatewireSession(a, { role: 'client' });
  t.after(() => {
    client.destroy();
    server.destroy();
  });
  server.on('stream', (stream: GatewireStream) => {
    if (getVar(stream.vars, 'PATH_INFO') === '/empty') stream.respond(204, [], { endStream: true });
    else echoApp(stream);
  });
  // Requests made before the server's SETTINGS are queued, then sent.
  assert.equal(client.ready, false);
  const [empty, echoed] = await Promise.all([
    fetchOn(client, ['REQUEST_METHOD', 'GET', 'PATH_INFO', '/empty']),
    fetchOn(client, ['REQUEST_METHOD', 'PUT', 'PATH_INFO', '/x'], Buffer.from('payload')),
  ]);
  assert.equal(client.ready, true);
  assert.equal(client.peerSettings?.maxConcurrentStreams, 128);
  assert.equal(empty.status, 204);
  assert.equal(empty.body.length, 0);
  assert.equal(echoed.body.toString(), 'payload');
});

test('200 concurrent streams on one connection each get exactly their own bytes back', { timeout: 30_000 }, async (t) => {
  // Streaming echo: the request body is piped straight back, so both directions are in flight at once.
  const srv = await startSessionServer(
    (stream) => {
      stream.respond(200, ['x-id', getVar(stream.vars, 'PATH_INFO')!]);
      stream.pipe(stream);
    },
    { maxConcurrentStreams: 256 },
  );
  t.after(() => srv.close());
  const client = await connectClient(srv.connectOpts);
  t.after(() => client.destroy());
  assert.equal(client.availableStreams, 256);

  const results = await withTimeout(
    Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const body = randomBytes(Math.floor(Math.random() * 150_000));
        const res = await fetchOn(client, ['REQUEST_METHOD', 'POST', 'PATH_INFO', `/s${i}`], body);
        return { i, ok: sha256(res.body) === sha256(body), id: getVar(res.headers, 'x-id'), len: res.body.length, sent: body.length };
      }),
    ),
    25_000,
    '200 echo streams',
  );
  for (const r of results) {
    assert.equal(r.id, `/s${r.i}`);
    assert.equal(r.len, r.sent, `stream ${r.i} length`);
    assert.ok(r.ok, `stream ${r.i} bytes differ`);
  }
  assert.equal(srv.sessions.length, 1, 'everything went over one connection');
  assert.equal(client.activeStreams, 0);
});

test('a reader that never reads stalls only its own stream, and its sender stops at the window', { timeout: 20_000 }, async (t) => {
  const STREAM_WINDOW = 64 * 1024;
  const TOTAL = 4 * 1024 * 1024;
  const CHUNK = 16 * 1024;
  const slow = { written: 0, finished: false, highWaterMark: 0 };
  const srv = await startSessionServer((stream) => {
    if (getVar(stream.vars, 'PATH_INFO') !== '/slow') {
      echoApp(stream);
      return;
    }
    stream.respond(200, []);
    slow.highWaterMark = stream.writableHighWaterMark;
    const block = Buffer.alloc(CHUNK, 0x5a);
    (async () => {
      while (slow.written < TOTAL) {
        slow.written += CHUNK;
        if (!stream.write(block)) await once(stream, 'drain');
      }
      stream.end();
      slow.finished = true;
    })().catch(() => {});
  });
  t.after(() => srv.close());
  const client = await connectClient(srv.connectOpts, { initialStreamWindow: STREAM_WINDOW });
  t.after(() => client.destroy());

  const slowStream = client.request(['REQUEST_METHOD', 'GET', 'PATH_INFO', '/slow'], { endStream: true });
  await once(slowStream, 'response');
  // Nobody reads slowStream. Meanwhile 20 other streams, each several windows long, must complete.
  const others = await withTimeout(
    Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const body = randomBytes(300_000);
        const res = await fetchOn(client, ['REQUEST_METHOD', 'POST', 'PATH_INFO', `/o${i}`], body);
        return sha256(res.body) === sha256(body);
      }),
    ),
    15_000,
    'streams beside a stalled one',
  );
  assert.ok(others.every(Boolean));

  // The sender of the stalled stream is parked: what it wrote is the window plus its own writable buffer.
  const writtenThen = slow.written;
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(slow.written, writtenThen, 'the stalled sender keeps writing');
  assert.equal(slow.finished, false);
  assert.ok(slowStream.readableLength <= STREAM_WINDOW, `client buffered ${slowStream.readableLength} > window`);
  assert.ok(
    slow.written <= STREAM_WINDOW + slow.highWaterMark + CHUNK,
    `sender got ${slow.written} bytes accepted; bound is window ${STREAM_WINDOW} + highWaterMark ${slow.highWaterMark} + one chunk`,
  );

  // Reading resumes the flow: the whole body arrives intact.
  const body = await withTimeout(readAll(slowStream), 15_000, 'stalled stream drained');
  assert.equal(body.length, TOTAL);
  assert.ok(body.every((b) => b === 0x5a));
});

test('a client RESET reaches the server stream as aborted + StreamResetError, and vice versa', { timeout: 10_000 }, async (t) => {
  const serverSide: GatewireStream[] = [];
  const srv = await startSessionServer((stream) => {
    serverSide.push(stream);
    stream.on('error', () => {});
    if (getVar(stream.vars, 'PATH_INFO') === '/server-resets') {
      stream.respond(200, []);
      stream.write('partial');
      setTimeout(() => stream.reset(ErrorCode.INTERNAL_ERROR), 20);
    }
  });
  t.after(() => srv.close());
  const client = await connectClient(srv.connectOpts);
  t.after(() => client.destroy());

  // Client → server.
  const c1 = client.request(['REQUEST_METHOD', 'POST', 'PATH_INFO', '/slow-upload']);
  c1.write('some body');
  await withTimeout(
    (async () => {
      while (serverSide.length === 0) await new Promise((r) => setTimeout(r, 5));
    })(),
    5000,
    'server stream',
  );
  const s1 = serverSide[0];
  const aborted = once(s1, 'aborted');
  const errored = once(s1, 'error') as Promise<[StreamResetError]>;
  c1.reset();
  await withTimeout(aborted, 5000, 'aborted on the server');
  const [err] = await withTimeout(errored, 5000, 'error on the server');
  assert.ok(err instanceof StreamResetError);
  assert.equal(err.code, ErrorCode.CANCEL);
  assert.equal(err.remote, true);
  assert.equal(c1.destroyed, true);
  if (!s1.closed) await withTimeout(once(s1, 'close'), 5000, 'server stream closed');
  assert.equal(srv.sessions[0].activeStreams, 0);

  // Server → client: a RESET after part of the body.
  const c2 = client.request(['REQUEST_METHOD', 'GET', 'PATH_INFO', '/server-resets'], { endStream: true });
  const cAborted = once(c2, 'aborted');
  const cErr = once(c2, 'error') as Promise<[StreamResetError]>;
  c2.resume();
  await withTimeout(cAborted, 5000, 'aborted on the client');
  const [err2] = await cErr;
  assert.equal(err2.code, ErrorCode.INTERNAL_ERROR);
  assert.equal(err2.codeName, 'INTERNAL_ERROR');
  assert.equal(err2.remote, true);
  assert.equal(err2.retryable, false);
  assert.equal(client.activeStreams, 0);

  // Destroying a client stream while it is open also sends RESET(CANCEL); the connection stays usable.
  const c3 = client.request(['REQUEST_METHOD', 'POST', 'PATH_INFO', '/third']);
  c3.write('x');
  await withTimeout(
    (async () => {
      while (serverSide.length < 3) await new Promise((r) => setTimeout(r, 5));
    })(),
    5000,
    'third server stream',
  );
  const s3Aborted = once(serverSide[2], 'aborted');
  c3.destroy();
  await withTimeout(s3Aborted, 5000, 'aborted after destroy()');
  assert.equal(client.destroyed, false);
});

test('a server that answers before the request body ended cancels the rest; the client sees a complete response', { timeout: 10_000 }, async (t) => {
  const srv = await startSessionServer((stream) => {
    stream.respond(413, ['content-length', '0'], { endStream: true });
  });
  t.after(() => srv.close());
  const client = await connectClient(srv.connectOpts);
  t.after(() => client.destroy());
  const stream = client.request(['REQUEST_METHOD', 'POST', 'PATH_INFO', '/big']);
  let errored: unknown = null;
  stream.on('error', (e) => {
    errored = e;
  });
  stream.write(Buffer.alloc(10_000));
  const [status] = (await once(stream, 'response')) as [number];
  assert.equal(status, 413);
  assert.equal((await readAll(stream)).length, 0);
  // Writes after the server's CANCEL are accepted and dropped; end() completes.
  await withTimeout(
    (async () => {
      while (client.activeStreams > 0) await new Promise((r) => setTimeout(r, 5));
    })(),
    5000,
    'stream closed on the wire',
  );
  await new Promise<void>((resolve) => stream.end(Buffer.alloc(1000), () => resolve()));
  assert.equal(errored, null);
  assert.equal(srv.sessions[0].activeStreams, 0);
});

test('detectProtocol tells native from uwsgi classic from the first bytes', () => {
  const preface = encodeSettings({ maxConcurrentStreams: 1, initialStreamWindow: 1, initialConnectionWindow: 1 });
  assert.equal(detectProtocol(Buffer.alloc(0)), 'need-more');
  assert.equal(detectProtocol(preface.subarray(0, 1)), 'need-more');
  assert.equal(detectProtocol(preface.subarray(0, 11)), 'need-more');
  assert.equal(detectProtocol(preface.subarray(0, 12)), 'native');
  assert.equal(detectProtocol(preface), 'native');
  assert.equal(detectProtocol(Buffer.from([0, 10, 0, 0])), 'uwsgi'); // NGINX uwsgi_pass: modifier1 0
  const fake = Buffer.from(preface);
  fake.write('XXXX', 8, 'latin1');
  assert.equal(detectProtocol(fake), 'uwsgi');
  assert.equal(FrameType.SETTINGS, 0x01);
});

test('socket backpressure: with huge windows and a peer that stops reading, the sender stops at the socket buffer', { timeout: 20_000 }, async (t) => {
  const TOTAL = 32 * 1024 * 1024;
  const BIG = 256 * 1024 * 1024;
  const flood = { written: 0, socket: null as import('node:net').Socket | null };
  const srv = await startSessionServer(
    (stream) => {
      stream.respond(200, []);
      const block = Buffer.alloc(256 * 1024, 0x42);
      (async () => {
        while (flood.written < TOTAL) {
          flood.written += block.length;
          if (!stream.write(block)) await once(stream, 'drain');
        }
        stream.end();
      })().catch(() => {});
    },
    { initialStreamWindow: BIG, initialConnectionWindow: BIG },
  );
  t.after(() => srv.close());
  const socket = (await import('node:net')).connect(srv.connectOpts);
  const client = new GatewireSession(socket, { role: 'client', initialStreamWindow: BIG, initialConnectionWindow: BIG });
  t.after(() => client.destroy());
  const stream = client.request(['REQUEST_METHOD', 'GET'], { endStream: true });
  await withTimeout(once(stream, 'response'), 5000, 'response');
  socket.pause(); // the client stops reading: only the kernel buffers and the server's own socket buffer remain
  const serverSocket = srv.sockets[0];
  let last = -1;
  await withTimeout(
    (async () => {
      // Wait until the writer is parked (no progress for 200 ms).
      while (flood.written !== last) {
        last = flood.written;
        await new Promise((r) => setTimeout(r, 200));
      }
    })(),
    10_000,
    'writer parked',
  );
  assert.ok(flood.written < TOTAL, 'the writer is held back although the windows would allow everything');
  // What the session queued in user space: at most one DATA frame past a server's socket high water, plus small control frames.
  const bound = SERVER_SOCKET_HIGH_WATER + 65_535 + 8 + 4096;
  assert.ok(serverSocket.writableLength <= bound, `server socket buffers ${serverSocket.writableLength} > ${bound}`);
  socket.resume();
  let received = 0;
  stream.on('data', (c: Buffer) => {
    received += c.length;
  });
  await withTimeout(once(stream, 'end'), 15_000, 'flood drained');
  assert.equal(received, TOTAL);
});

test('maxRequestBody: a body over the limit resets the stream with BODY_TOO_LARGE on both sides', { timeout: 10_000 }, async (t) => {
  const serverErrors: StreamResetError[] = [];
  const srv = await startSessionServer(
    (stream) => {
      stream.on('error', (e) => serverErrors.push(e as StreamResetError));
      stream.resume();
    },
    { maxRequestBody: 1000 },
  );
  t.after(() => srv.close());
  const client = await connectClient(srv.connectOpts);
  t.after(() => client.destroy());
  const small = client.request(['REQUEST_METHOD', 'POST']);
  small.end(Buffer.alloc(1000));
  const stream = client.request(['REQUEST_METHOD', 'POST']);
  const errored = once(stream, 'error') as Promise<[StreamResetError]>;
  stream.end(Buffer.alloc(5000));
  const [err] = await withTimeout(errored, 5000, 'client error');
  assert.equal(err.code, ErrorCode.BODY_TOO_LARGE);
  assert.equal(err.remote, true);
  assert.equal(err.retryable, false);
  assert.equal(serverErrors.length, 1, 'only the stream over the limit failed');
  assert.equal(serverErrors[0].code, ErrorCode.BODY_TOO_LARGE);
  assert.equal(serverErrors[0].remote, false);
  assert.equal(small.destroyed, false);
});

test('a streamed 64 KiB chunk is accepted without backpressure and written to the socket at once, not held corked to the end of the poll phase', { timeout: 10_000 }, async (t) => {
  let serverStream: GatewireStream | null = null;
  const srv = await startSessionServer(
    (stream) => {
      serverStream = stream;
    },
    { unix: true },
  );
  t.after(() => srv.close());
  const socket = (await import('node:net')).connect(srv.connectOpts);
  const client = new GatewireSession(socket, { role: 'client' });
  t.after(() => client.destroy());
  await withTimeout(once(client, 'ready'), 5000, 'ready');
  const stream = client.request(['REQUEST_METHOD', 'POST']);
  stream.write(Buffer.alloc(10)); // the REQUEST frame and a first DATA leave at the end of this iteration
  await new Promise((r) => setImmediate(r));
  // A 64 KiB socket read relayed is no backpressure by itself: pipe() would pause the source on false.
  assert.equal(stream.write(Buffer.alloc(64 * 1024, 1)), true);
  // An empty Unix socket takes 64 KiB in one write: it is in the kernel before write() returns, and
  // only the frame of its last byte (65,536 = 65,535 + 1) waits in the cork.
  assert.ok(socket.writableLength < 1024, `${socket.writableLength} bytes still queued in user space`);
  stream.end();
  await withTimeout(
    (async () => {
      while (serverStream === null) await new Promise((r) => setTimeout(r, 5));
    })(),
    5000,
    'server stream',
  );
  assert.equal((await readAll(serverStream as unknown as GatewireStream)).length, 10 + 64 * 1024);
});

test('socket backpressure on uploads: a client streaming to a server that stops reading holds at most a cork of frames', { timeout: 20_000 }, async (t) => {
  const BIG = 1 << 30;
  const TOTAL = 64 * 1024 * 1024;
  const served = { socket: null as import('node:net').Socket | null, stream: null as GatewireStream | null };
  const srv = await startSessionServer(
    (stream) => {
      served.stream = stream;
    },
    { initialStreamWindow: BIG, initialConnectionWindow: BIG, onSession: () => {} },
  );
  t.after(() => srv.close());
  const client = await connectClient(srv.connectOpts, { initialStreamWindow: BIG, initialConnectionWindow: BIG });
  t.after(() => client.destroy());
  const socket = (client as unknown as { socket: import('node:net').Socket }).socket;
  const stream = client.request(['REQUEST_METHOD', 'POST']);
  let written = 0;
  const chunk = Buffer.alloc(64 * 1024, 0x43);
  let stopped = false;
  void (async () => {
    await new Promise((r) => setImmediate(r));
    srv.sockets[0].pause(); // the server stops reading: only the kernel buffers and the client's own queue remain
    while (written < TOTAL && !stopped) {
      written += chunk.length;
      if (!stream.write(chunk)) await once(stream, 'drain');
    }
    stream.end();
  })().catch(() => {});
  let last = -1;
  await withTimeout(
    (async () => {
      while (written !== last) {
        last = written;
        await new Promise((r) => setTimeout(r, 200));
      }
    })(),
    10_000,
    'writer parked',
  );
  assert.ok(written < TOTAL, 'the writer is held back although the windows would allow everything');
  // At most one cork's worth (256 KiB) plus the frame that crossed it, plus what the socket's own high water lets through.
  const bound = 256 * 1024 + 65_535 + 8 + 16 * 1024 + 4096;
  assert.ok(socket.writableLength <= bound, `client socket buffers ${socket.writableLength} > ${bound}`);
  srv.sockets[0].resume();
  await withTimeout(
    (async () => {
      while (served.stream === null) await new Promise((r) => setTimeout(r, 5));
    })(),
    5000,
    'server stream',
  );
  const got = await withTimeout(readAll(served.stream as unknown as GatewireStream), 15_000, 'upload drained');
  stopped = true;
  assert.equal(got.length, written);
});

test('frames leave in batches of about 2 KiB, not one writev per loop iteration: a burst of requests reaches the server while the burst is still being written', { timeout: 10_000 }, async (t) => {
  let seen = 0;
  const srv = await startSessionServer(
    (stream) => {
      seen++;
      stream.respond(204, [], { endStream: true });
    },
    { unix: true },
  );
  t.after(() => srv.close());
  const client = await connectClient(srv.connectOpts);
  t.after(() => client.destroy());
  const socket = (client as unknown as { socket: import('node:net').Socket }).socket;
  const path = `/${'x'.repeat(100)}`;
  const streams: GatewireStream[] = [];
  let total = 0;
  for (let i = 0; i < 50; i++) {
    streams.push(client.request(['REQUEST_METHOD', 'GET', 'PATH_INFO', path], { endStream: true }));
    total += 8 + 40 + path.length;
  }
  // Everything but the last batch went to the (idle, empty) Unix socket while the loop ran.
  assert.ok(socket.writableLength < 2048 + 512, `${socket.writableLength} of about ${total} bytes still corked`);
  await withTimeout(Promise.all(streams.map((s) => once(s, 'response'))), 5000, 'responses');
  assert.equal(seen, 50);
});
