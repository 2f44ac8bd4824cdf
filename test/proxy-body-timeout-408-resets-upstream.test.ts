// limits.body_timeout (NGINX's client_body_timeout): a client that stops
// sending its body for longer than the timeout between two reads gets 408 and
// its connection closed; a streamed body's upstream stream is reset, so the
// app's abort signal fires; a small body (read whole first) never reached the
// app. Other clients are served meanwhile.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getJson, parseResponses, rawSession, startApp, startGuardedProxy } from './helpers/guarantee-stack.ts';

interface AppDebug {
  requests: number;
  uploadAborts: number;
}

test('a stalled body: 408 after body_timeout, connection closed, the upstream stream reset and the app aborted', { timeout: 60000 }, async (t) => {
  const app = await startApp(t, 'A');
  const proxy = await startGuardedProxy(t, { upstreams: { app: { servers: [app.address], max_body: '10mb' } }, limits: { body_timeout: '1s' } });
  const debug = () => getJson<AppDebug>(`${proxy.url}/debug`);

  const stall = async (head: string, first: string) => {
    const started = Date.now();
    const r = await rawSession(
      proxy.port,
      (sock) => {
        sock.write(head + first);
      },
      { timeoutMs: 8000 },
    );
    const res = parseResponses(r.data).responses[0];
    return { status: res?.status, ended: r.ended, ms: Date.now() - started, connection: res?.headers.find(([k]) => k.toLowerCase() === 'connection')?.[1] };
  };

  const before = await debug();
  // streamed (over body_buffer_size): the app is reading it when the client stops
  const streamed = await stall('POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n', 'u'.repeat(100_000));
  assert.equal(streamed.status, 408);
  assert.equal(streamed.ended, 'end', 'the proxy closed the connection');
  assert.equal(streamed.connection, 'close');
  assert.ok(streamed.ms >= 900 && streamed.ms < 5000, `${streamed.ms} ms`);
  // chunked: the same
  const chunked = await stall('POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n', `400\r\n${'c'.repeat(1024)}\r\n`);
  assert.equal(chunked.status, 408);
  let after = await debug();
  for (let i = 0; i < 30 && after.uploadAborts < before.uploadAborts + 2; i++) {
    await new Promise((r) => setTimeout(r, 100));
    after = await debug();
  }
  assert.equal(after.uploadAborts - before.uploadAborts, 2, "the app's abort signal fired for both");

  // small (read whole before the first try): 408, and the app never saw the request
  const small = await stall('POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n', 'x'.repeat(100));
  assert.equal(small.status, 408);
  assert.equal((await debug()).requests, after.requests, 'never forwarded');

  // meanwhile and after, others are served
  const ok = await rawSession(proxy.port, (sock) => {
      sock.write('POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc');
    }, { timeoutMs: 5000 });
  assert.equal(parseResponses(ok.data).responses[0]?.status, 200);
});
