// A stock Apache 2.4 with mod_proxy_uwsgi (`ProxyPass / uwsgi://...`) in front
// of `gatewire serve`, over TCP and over a Unix socket: what Apache sends
// (its own vars set, repeated request headers) reaches the app as the request
// the client made, and the close-delimited answer reaches the client intact.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmodSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type Apache, startApache } from './helpers/appserver-apache.ts';
import { startServe } from './helpers/appserver-clients.ts';
import { rawHeader, rawHttp } from './helpers/appserver-nginx.ts';
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

describe('Apache mod_proxy_uwsgi → gatewire serve', { timeout: 120_000 }, () => {
  const { dir, cleanup } = tempDir('gw-apache-');
  let app: Proc;
  let apache: Apache;
  const transports: Array<{ name: string; port: () => number }> = [
    { name: 'tcp', port: () => apache.ports[0] },
    { name: 'unix socket', port: () => apache.ports[1] },
  ];

  before(async () => {
    // Apache's children run as www-data when started as root: they must reach the socket.
    chmodSync(dir, 0o755);
    const appPort = await freePort();
    const sock = path.join(dir, 'app.sock');
    app = await startServe(['examples/hello.ts', '--listen', `127.0.0.1:${appPort}`, '--listen', `unix:${sock}`, '--workers', '2', '--chmod-socket', '666']);
    apache = await startApache(dir, [`127.0.0.1:${appPort}`, `unix:${sock}`]);
  });

  after(async () => {
    await apache?.stop();
    const code = await app?.stop(10_000);
    cleanup();
    assert.equal(code, 0, `appserver exit code (output:\n${app?.output().slice(-3000)})`);
  });

  for (const t of transports) {
    describe(`over ${t.name}`, () => {
      test('GET with a query string reaches the app as the full URL, method and headers the client sent', async () => {
        const r = await rawHttp(t.port(), 'GET /inspect/a%20b?x=1&y=two%20words&z HTTP/1.1\r\nHost: example.test\r\nUser-Agent: gw-test\r\nAccept: text/plain\r\nConnection: close\r\n\r\n');
        assert.equal(r.status, 200);
        const info = JSON.parse(r.body.toString());
        assert.equal(info.method, 'GET');
        assert.equal(info.url, 'http://example.test/inspect/a%20b?x=1&y=two%20words&z');
        assert.equal(info.headers['user-agent'], 'gw-test');
        assert.equal(info.headers.accept, 'text/plain');
        assert.equal(info.remoteAddr.hostname, '127.0.0.1');
      });

      test('POST body arrives byte for byte (Content-Length framing)', async () => {
        const body = Buffer.alloc(300_000);
        for (let i = 0; i < body.length; i++) body[i] = (i * 31) & 0xff;
        const r = await rawHttp(t.port(), `POST /echo-length HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`, [body]);
        assert.equal(r.status, 200);
        assert.deepEqual(JSON.parse(r.body.toString()), { length: body.length, sha256: sha256(body) });
      });

      test('POST echo: the body comes back, with the request content type', async () => {
        const body = Buffer.from('{"hello":"apache"}');
        const r = await rawHttp(t.port(), `POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`, [body]);
        assert.equal(r.status, 200);
        assert.equal(rawHeader(r.rawHeaders, 'content-type'), 'application/json');
        assert.equal(r.body.toString(), body.toString());
      });

      test('repeated request headers all reach the app', async () => {
        const r = await rawHttp(t.port(), 'GET /inspect HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\nCookie: b=2\r\nX-Multi: one\r\nX-Multi: two\r\nConnection: close\r\n\r\n');
        assert.equal(r.status, 200);
        const info = JSON.parse(r.body.toString());
        // Unlike NGINX, Apache folds repeated request headers itself (Cookie
        // included, with ", ") before building the vars: one HTTP_COOKIE var
        // arrives, and both cookies are in it.
        assert.equal(info.headers.cookie, 'a=1, b=2');
        assert.equal(info.headers['x-multi'], 'one, two');
      });

      test('repeated Set-Cookie response headers stay separate', async () => {
        const r = await rawHttp(t.port(), 'GET /cookies HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
        assert.equal(r.status, 200);
        assert.deepEqual(headerList(r.rawHeaders, 'set-cookie'), ['a=1; Path=/', 'b=2; Path=/; HttpOnly']);
      });

      test('GET / answers with a Content-Length body', async () => {
        const r = await rawHttp(t.port(), 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
        assert.equal(r.status, 200);
        assert.equal(r.body.toString(), 'Hello, world!\n');
        assert.equal(rawHeader(r.rawHeaders, 'content-length'), String(r.body.length));
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

      test('a 404 from the app passes through', async () => {
        const r = await rawHttp(t.port(), 'GET /no/such/route HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
        assert.equal(r.status, 404);
        assert.equal(r.body.toString(), 'Not Found\n');
      });
    });
  }
});
