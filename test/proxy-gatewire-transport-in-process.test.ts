// GatewireTransport against an in-process GatewireSession server: a small typed
// body handed over whole when it arrives within the head's loop iteration (a
// slow one streams at once), a streamed body, a refused stream as a
// retryable error, cancellation through the AbortSignal (the server sees the
// RESET: the app's abort fires), and timeouts.send for an upstream that takes
// no request body.
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import test, { type TestContext } from 'node:test';
import { parseConfig } from '../proxy/config.ts';
import type { UpstreamError } from '../proxy/errors.ts';
import { Host } from '../proxy/hosts.ts';
import { GatewireTransport } from '../proxy/transports/gatewire.ts';
import type { TransportRequest } from '../proxy/transports/transport.ts';
import type { GatewireStream } from '../protocol/session.ts';
import { readAll, startSessionServer, type TestServer } from './helpers/protocol-session.ts';

/** Resolves with the reset error (or null) once the server stream closed. */
function closedWith(s: GatewireStream): Promise<unknown> {
  return new Promise((resolve) => {
    s.on('error', () => {});
    s.once('close', () => resolve(s.resetError));
  });
}

function transportFor(extra = ''): GatewireTransport {
  const cfg = parseConfig(`routes: [{ upstream: a }]\nupstreams: { a: { servers: [{ address: "127.0.0.1:1" }]${extra} } }\n`).upstreams.a;
  return new GatewireTransport(cfg);
}

function request(over: Partial<TransportRequest> = {}): TransportRequest {
  return {
    method: 'GET',
    path: '/x',
    upstreamHeaders: ['host', 'example.com'],
    body: null,
    bodyBuffer: null,
    contentLength: -1,
    remoteAddress: '127.0.0.1',
    remotePort: 1,
    scheme: 'http',
    serverName: 'example.com',
    serverPort: 80,
    scriptName: '',
    readTimeoutMs: 5000,
    sendTimeoutMs: 5000,
    bodyStarted: false,
    signal: new AbortController().signal,
    progress: () => 0,
    ...over,
  };
}

async function serve(t: TestContext, onStream: (s: GatewireStream) => void, opts = {}): Promise<{ server: TestServer; host: Host }> {
  const server = await startSessionServer(onStream, opts);
  t.after(() => server.close());
  const { port } = server.connectOpts as { port: number };
  return { server, host: new Host({ address: `127.0.0.1:${port}` }) };
}

test('a small response arrives whole; a large or untyped one streams', async (t) => {
  const big = Buffer.alloc(1 << 20, 7);
  const { host } = await serve(t, (s) => {
    const path = s.vars[s.vars.indexOf('PATH_INFO') + 1];
    if (path === '/untyped') {
      s.respond(200, ['Content-Length', '5']);
      s.end('plain');
      return;
    }
    const size = path === '/big' ? big.length : 5;
    s.respond(200, ['Content-Type', 'text/plain', 'Content-Length', String(size)]);
    s.end(size === 5 ? 'hello' : big);
  });
  const transport = transportFor();
  t.after(() => transport.close(true));
  const small = await transport.request(host, request());
  assert.equal(small.statusCode, 200);
  assert.equal(small.takeWholeBody?.(5)?.toString(), 'hello');
  const large = await transport.request(host, request({ path: '/big' }));
  assert.equal(large.takeWholeBody?.(big.length), null);
  const got = await readAll(large.body as GatewireStream);
  assert.equal(got.length, big.length);
  const untyped = await transport.request(host, request({ path: '/untyped' }));
  assert.equal((await readAll(untyped.body as GatewireStream)).toString(), 'plain');
});

test('a small body split over socket reads arrives whole; one sent slowly streams from its first piece', async (t) => {
  // 150 KiB is three DATA frames, so more than one 64 KiB socket read. Over a
  // Unix socket the server's synchronous writes put all of it in the client's
  // receive queue before the client's next poll (TCP on loopback starts with
  // a 64 KiB window, so there the rest may come a loop iteration later and
  // the body rightly streams: that is what flaked under load in CI).
  const body = Buffer.alloc(150 * 1024);
  for (let i = 0; i < body.length; i++) body[i] = i % 251;
  let sawHead!: () => void;
  const headSeen = new Promise<void>((resolve) => (sawHead = resolve));
  const server = await startSessionServer(
    (s) => {
      s.respond(200, ['Content-Type', 'application/octet-stream', 'Content-Length', String(body.length)]);
      if (s.vars[s.vars.indexOf('PATH_INFO') + 1] === '/fast') {
        s.end(body);
        return;
      }
      // The rest waits until the client holds the head: a transport that
      // waited for the whole body would hang here.
      s.write(body.subarray(0, 30_000));
      void headSeen.then(() => s.end(body.subarray(30_000)));
    },
    { unix: true },
  );
  t.after(() => server.close());
  const host = new Host({ address: `unix:${(server.connectOpts as { path: string }).path}` });
  const transport = transportFor();
  t.after(() => transport.close(true));
  const fast = await transport.request(host, request({ path: '/fast' }));
  assert.ok(fast.takeWholeBody?.(body.length)?.equals(body), 'the whole body comes with the head');
  const slow = await transport.request(host, request());
  assert.equal(slow.takeWholeBody?.(body.length), null);
  sawHead();
  assert.ok((await readAll(slow.body as GatewireStream)).equals(body));
});

test('the request body goes up whole (buffer) or streamed, with SCRIPT_NAME', async (t) => {
  const seen: Array<{ len: number; script: string | undefined }> = [];
  const { host } = await serve(t, (s) => {
    void readAll(s).then((b) => {
      const i = s.vars.indexOf('SCRIPT_NAME');
      seen.push({ len: b.length, script: i < 0 ? undefined : s.vars[i + 1] });
      s.respond(204, []);
      s.end();
    });
  });
  const transport = transportFor();
  t.after(() => transport.close(true));
  await transport.request(host, request({ method: 'POST', bodyBuffer: Buffer.alloc(1000), scriptName: '/app' }));
  const body = Readable.from([Buffer.alloc(300_000), Buffer.alloc(300_000)]);
  await transport.request(host, request({ method: 'POST', body }));
  assert.deepEqual(seen, [
    { len: 1000, script: '/app' },
    { len: 600_000, script: undefined },
  ]);
});

test('a stream refused by GOAWAY fails as retryable (the app never saw it)', async (t) => {
  const { host } = await serve(t, () => {}, { onSession: (session: { goaway(): void }) => session.goaway() });
  const transport = transportFor();
  t.after(() => transport.close(true));
  await assert.rejects(transport.request(host, request()), (err: UpstreamError) => err.retryable === true && (err.code === 'GW_UPSTREAM_REFUSED_STREAM' || err.code === 'GW_UPSTREAM_CONNECT'));
});

test('aborting the signal resets the upstream stream', async (t) => {
  let reset: Promise<unknown> | null = null;
  const { host } = await serve(t, (s) => {
    reset = closedWith(s);
  });
  const transport = transportFor();
  t.after(() => transport.close(true));
  const ac = new AbortController();
  const pending = transport.request(host, request({ signal: ac.signal }));
  await new Promise((r) => setTimeout(r, 50));
  ac.abort();
  await assert.rejects(pending, (err: UpstreamError) => err.code === 'GW_CLIENT_ABORTED');
  assert.ok(reset, 'the server saw the stream');
  assert.equal(((await reset) as Error | null)?.message, 'stream 1 reset by the peer: CANCEL');
});

test('timeouts.send: an upstream that takes none of the request body → 504 after the send timeout, stream reset', async (t) => {
  let closed: Promise<unknown> | null = null;
  const { host } = await serve(
    t,
    (s) => {
      s.pause(); // never reads: the stream window (64 KiB here) fills and stays full
      closed = closedWith(s);
    },
    { initialStreamWindow: 65536 },
  );
  const transport = transportFor(', timeouts: { send: 500ms, read: 30s }');
  t.after(() => transport.close(true));
  const body = Readable.from(
    (function* () {
      for (let i = 0; i < 64; i++) yield Buffer.alloc(64 * 1024);
    })(),
  );
  const started = Date.now();
  await assert.rejects(transport.request(host, request({ method: 'POST', body, sendTimeoutMs: 500, readTimeoutMs: 30_000 })), (err: UpstreamError) => err.code === 'GW_UPSTREAM_TIMEOUT');
  const ms = Date.now() - started;
  assert.ok(ms >= 400 && ms < 5000, `${ms} ms`);
  assert.match(String(((await closed) as Error | null)?.message), /reset by the peer: CANCEL/);
});
