// A stock NGINX `uwsgi_pass`es to `gatewire serve` over a Unix socket and over
// TCP: what NGINX really sends (repeated HTTP_* vars, CONTENT_LENGTH with a
// leftover HTTP_TRANSFER_ENCODING after buffering a chunked upload, empty
// CONTENT_LENGTH on GET) is understood, and what we answer reaches the client
// intact (repeated Set-Cookie, HEAD, 204, large and streamed bodies).
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmodSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startServe } from './helpers/appserver-clients.ts';
import { type Nginx, rawHeader, rawHttp, startNginx } from './helpers/appserver-nginx.ts';
import { freePort, tempDir } from './helpers/net.ts';
import type { Proc } from './helpers/procs.ts';

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

function headerList(raw: string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if (raw[i].toLowerCase() === name) out.push(raw[i + 1]);
  return out;
}

function chunked(parts: Buffer[]): Buffer[] {
  const out: Buffer[] = [];
  for (const p of parts) out.push(Buffer.from(`${p.length.toString(16)}\r\n`), p, Buffer.from('\r\n'));
  out.push(Buffer.from('0\r\n\r\n'));
  return out;
}

describe('NGINX uwsgi_pass → gatewire serve', { timeout: 120_000 }, () => {
  const { dir, cleanup } = tempDir('gw-ngx-');
  let app: Proc;
  let nginx: Nginx;
  const transports: Array<{ name: string; port: () => number }> = [
    { name: 'unix socket', port: () => nginx.ports[0] },
    { name: 'tcp', port: () => nginx.ports[1] },
  ];

  before(async () => {
    // NGINX workers may run as another user: they must reach the socket.
    chmodSync(dir, 0o755);
    const appPort = await freePort();
    const sock = path.join(dir, 'app.sock');
    app = await startServe(['examples/hello.ts', '--listen', `unix:${sock}`, '--listen', `127.0.0.1:${appPort}`, '--workers', '2', '--chmod-socket', '666']);
    nginx = await startNginx(dir, [`unix:${sock}`, `127.0.0.1:${appPort}`]);
  });

  after(async () => {
    await nginx?.stop();
    const code = await app?.stop(10_000);
    cleanup();
    assert.equal(code, 0, `appserver exit code (output:\n${app?.output().slice(-3000)})`);
  });

  for (const t of transports) {
    describe(`over ${t.name}`, () => {
      test('GET with a query string and a non-ASCII path reaches the app as a full, percent-encoded URL', async () => {
        const r = await rawHttp(t.port(), 'GET /inspect/caf\xc3\xa9?a=1&b=two%20words&c HTTP/1.1\r\nHost: example.test\r\nUser-Agent: gw-test\r\nConnection: close\r\n\r\n');
        assert.equal(r.status, 200);
        const info = JSON.parse(r.body.toString());
        assert.equal(info.method, 'GET');
        assert.equal(info.url, 'http://example.test/inspect/caf%C3%A9?a=1&b=two%20words&c');
        assert.equal(info.headers['user-agent'], 'gw-test');
        assert.equal(info.remoteAddr.hostname, '127.0.0.1');
        assert.equal(info.remoteAddr.transport, 'tcp');
      });

      test('POST with a Content-Length body', async () => {
        const body = Buffer.alloc(300_000, 7);
        const r = await rawHttp(t.port(), `POST /echo-length HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`, [body]);
        assert.equal(r.status, 200);
        assert.deepEqual(JSON.parse(r.body.toString()), { length: body.length, sha256: sha256(body) });
      });

      test('chunked client upload: NGINX buffers it and frames it by CONTENT_LENGTH; the bytes arrive intact', async () => {
        const parts = Array.from({ length: 40 }, (_, i) => Buffer.alloc(10_000 + i, i));
        const total = Buffer.concat(parts);
        const r = await rawHttp(t.port(), 'POST /echo-length HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/x-test\r\nConnection: close\r\n\r\n', chunked(parts));
        assert.equal(r.status, 200);
        assert.deepEqual(JSON.parse(r.body.toString()), { length: total.length, sha256: sha256(total) });
      });

      test('large response (24 MiB) arrives complete', async () => {
        const n = 24 * 1024 * 1024;
        const r = await rawHttp(t.port(), `GET /bytes/${n} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
        assert.equal(r.status, 200);
        assert.equal(r.body.length, n);
        assert.equal(r.body.indexOf(0), -1);
      });

      test('repeated request headers are joined (Cookie with "; ") instead of losing all but one', async () => {
        const r = await rawHttp(t.port(), 'GET /inspect HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\nCookie: b=2\r\nX-Multi: one\r\nX-Multi: two\r\nConnection: close\r\n\r\n');
        assert.equal(r.status, 200);
        const info = JSON.parse(r.body.toString());
        assert.equal(info.headers.cookie, 'a=1; b=2');
        assert.equal(info.headers['x-multi'], 'one, two');
      });

      test('repeated Set-Cookie response headers stay separate', async () => {
        const r = await rawHttp(t.port(), 'GET /cookies HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
        assert.equal(r.status, 200);
        assert.deepEqual(headerList(r.rawHeaders, 'set-cookie'), ['a=1; Path=/', 'b=2; Path=/; HttpOnly']);
      });

      test('HEAD gets the headers and no body', async () => {
        const r = await rawHttp(t.port(), 'HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', [], { isHead: true });
        assert.equal(r.status, 200);
        assert.equal(r.body.length, 0);
        assert.equal(rawHeader(r.rawHeaders, 'content-type'), 'text/plain');
      });

      test('204 has no body', async () => {
        const r = await rawHttp(t.port(), 'GET /status/204 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
        assert.equal(r.status, 204);
        assert.equal(r.body.length, 0);
      });

      test('a streamed response (SSE) is not buffered by NGINX: the first event arrives long before the end', async () => {
        const r = await rawHttp(t.port(), 'GET /sse?n=2&ms=2500 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
        assert.equal(r.status, 200);
        assert.equal(rawHeader(r.rawHeaders, 'content-type'), 'text/event-stream');
        assert.match(r.body.toString(), /data: event 0\n\n.*data: event 1\n\n/s);
        assert.ok(r.endMs - r.firstByteMs >= 1500, `first event at ${r.firstByteMs} ms, end at ${r.endMs} ms: the stream was buffered`);
      });

      test('an app exception is a 500 with a short body and no stack trace', async () => {
        const r = await rawHttp(t.port(), 'GET /error HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
        assert.equal(r.status, 500);
        assert.equal(r.body.toString(), 'Internal Server Error\n');
      });
    });
  }
});
