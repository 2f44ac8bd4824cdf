// The native gatewire protocol end to end against `gatewire serve`: many
// streams multiplexed on one connection, per-stream flow control (a slow
// reader stalls only itself), RESET reaching the app's abort signal, the 504
// and 413 cut-offs, and a 500 that never leaks a stack trace.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { GatewireSession } from '../protocol/session.ts';
import { collect, nativeRequest, nativeSession, requestVars, startServe, uwsgiRequest, varsHeader } from './helpers/appserver-clients.ts';
import { tempDir } from './helpers/net.ts';
import type { Proc } from './helpers/procs.ts';

async function eventually<T>(fn: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 15000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms (last value ${JSON.stringify(v)})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('native protocol → gatewire serve (Fetch app)', { timeout: 120_000 }, () => {
  const { dir, cleanup } = tempDir('gw-nat-');
  const addr = `unix:${dir}/app.sock`;
  let app: Proc;
  let session: GatewireSession;

  before(async () => {
    // In-process so that /aborts counts the aborts of the process serving the streams.
    app = await startServe(['examples/hello.ts', '--listen', addr, '--workers', '0', '--timeout', '2', '--max-body', '64k', '--max-streams', '256']);
    session = await nativeSession(addr);
  });

  after(async () => {
    session?.destroy();
    const code = await app?.stop(10_000);
    cleanup();
    assert.equal(code, 0, app?.output().slice(-3000));
  });

  test('200 concurrent streams on one connection each get their own answer', async () => {
    const n = 200;
    const results = await Promise.all(Array.from({ length: n }, (_, i) => nativeRequest(session, requestVars('GET', `/inspect?i=${i}`))));
    for (let i = 0; i < n; i++) {
      assert.equal(results[i].status, 200);
      assert.equal(JSON.parse(results[i].body.toString()).url, `http://localhost/inspect?i=${i}`);
    }
  });

  test('a stream whose reader does not read stalls alone: other streams on the connection complete', async () => {
    const big = 16 * 1024 * 1024;
    const slow = session.request(requestVars('GET', `/bytes/${big}`), { endStream: true });
    await new Promise<void>((resolve) => slow.once('response', () => resolve()));
    slow.pause();
    // The slow stream now sits at its window; 50 other exchanges must still pass.
    const others = await Promise.all(Array.from({ length: 50 }, () => nativeRequest(session, requestVars('GET', '/bytes/100000'))));
    for (const r of others) assert.equal(r.body.length, 100000);
    assert.ok(slow.readableLength < big, 'the slow stream was not flow controlled');
    let got = 0;
    slow.on('data', (c: Buffer) => {
      got += c.length;
    });
    slow.resume();
    await new Promise((resolve, reject) => {
      slow.once('end', resolve);
      slow.once('error', reject);
    });
    assert.equal(got, big);
  });

  test('RESET of a stream fires the abort signal the app holds', async () => {
    const before = Number((await nativeRequest(session, requestVars('GET', '/aborts'))).body.toString());
    const stream = session.request(requestVars('GET', '/sse?n=1000&ms=50'), { endStream: true });
    await new Promise<void>((resolve) => stream.once('data', () => resolve()));
    stream.reset();
    await eventually(
      async () => Number((await nativeRequest(session, requestVars('GET', '/aborts'))).body.toString()),
      (v) => v >= before + 1,
    );
  });

  test('request body streamed up and echoed back through backpressure (8 MiB)', async () => {
    const size = 8 * 1024 * 1024;
    const stream = session.request(requestVars('POST', '/echo'), { endStream: false });
    const done = collect(stream, 20_000);
    const chunk = Buffer.alloc(60_000, 5);
    // Too large for --max-body 64k: expect a 413 or a reset, never a silent success.
    let sent = 0;
    const pump = async () => {
      while (sent < size && !stream.destroyed) {
        const piece = chunk.subarray(0, Math.min(chunk.length, size - sent));
        sent += piece.length;
        if (!stream.write(piece)) await new Promise((r) => stream.once('drain', r));
      }
      if (!stream.destroyed) stream.end();
    };
    pump().catch(() => {});
    // /echo answers at once and streams the body back, so the cut comes after the head: a reset.
    const r = await done.then(
      (res) => ({ status: res.status, err: null as Error | null }),
      (err: Error) => ({ status: -1, err }),
    );
    if (r.status === -1) assert.equal((r.err as { codeName?: string }).codeName, 'BODY_TOO_LARGE', String(r.err));
    else assert.equal(r.status, 413);
  });

  test('CONTENT_LENGTH over --max-body is answered 413 without calling the app', async () => {
    const r = await nativeRequest(session, requestVars('POST', '/echo-length', [], String(100 * 1024)), Buffer.alloc(100 * 1024));
    assert.equal(r.status, 413);
  });

  test('an app that never answers is cut at --timeout with a 504', async () => {
    const r = await nativeRequest(session, requestVars('GET', '/hang'), null, 30_000);
    assert.equal(r.status, 504);
  });

  test('exceptions and rejections become a 500 with a short body and no stack', async () => {
    for (const path of ['/error', '/reject']) {
      const r = await nativeRequest(session, requestVars('GET', path));
      assert.equal(r.status, 500);
      assert.equal(r.body.toString(), 'Internal Server Error\n');
      assert.equal(varsHeader(r.headers, 'content-type'), 'text/plain; charset=utf-8');
    }
    // the log line is written by another stream than the response: wait for it rather than race it
    await app.waitFor(/boom: a rejected promise/, 10000);
    assert.match(app.output(), /boom: an exception in the app/, 'the stack goes to the log');
  });

  test('HEAD, 204 and 304 carry no body; Set-Cookie stays repeated', async () => {
    const head = await nativeRequest(session, requestVars('HEAD', '/'));
    assert.equal(head.status, 200);
    assert.equal(head.body.length, 0);
    for (const code of [204, 304]) {
      const r = await nativeRequest(session, requestVars('GET', `/status/${code}`));
      assert.equal(r.status, code);
      assert.equal(r.body.length, 0);
    }
    const c = await nativeRequest(session, requestVars('GET', '/cookies'));
    const cookies = c.headers.filter((_, i) => i % 2 === 1 && c.headers[i - 1] === 'set-cookie');
    assert.deepEqual(cookies, ['a=1; Path=/', 'b=2; Path=/; HttpOnly']);
  });

  test('the same socket also serves uwsgi classic', async () => {
    const r = await uwsgiRequest(addr, requestVars('GET', '/'));
    assert.equal(r.status, 200);
    assert.equal(r.body.toString(), 'Hello, world!\n');
  });
});
