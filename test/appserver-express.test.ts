// Express 5 from npm, unchanged, served by `gatewire serve` as a Node
// (req, res) listener: routing, JSON bodies, cookies, redirects, res.write
// streaming and res.sendFile, through the native protocol and through NGINX.
import assert from 'node:assert/strict';
import { chmodSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { GatewireSession } from '../protocol/session.ts';
import { nativeRequest, nativeSession, requestVars, startServe, varsHeader } from './helpers/appserver-clients.ts';
import { type Nginx, rawHeader, rawHttp, startNginx } from './helpers/appserver-nginx.ts';
import { tempDir } from './helpers/net.ts';
import { type Proc, ROOT } from './helpers/procs.ts';

const FILE = readFileSync(path.join(ROOT, 'examples/public/hello.txt'));

function cookiesOf(headers: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) if (headers[i].toLowerCase() === 'set-cookie') out.push(headers[i + 1]);
  return out;
}

describe('Express app on gatewire serve', { timeout: 120_000 }, () => {
  const { dir, cleanup } = tempDir('gw-exp-');
  const sock = path.join(dir, 'app.sock');
  let app: Proc;
  let nginx: Nginx;
  let session: GatewireSession;

  before(async () => {
    chmodSync(dir, 0o755);
    app = await startServe(['examples/express-app.ts', '--listen', `unix:${sock}`, '--workers', '1', '--chmod-socket', '666']);
    assert.match(app.output(), /node app examples\/express-app\.ts/);
    nginx = await startNginx(dir, [`unix:${sock}`]);
    session = await nativeSession(`unix:${sock}`);
  });

  after(async () => {
    session?.destroy();
    await nginx?.stop();
    const code = await app?.stop(10_000);
    cleanup();
    assert.equal(code, 0, app?.output().slice(-3000));
  });

  describe('through the native protocol', () => {
    test('routing with params and query', async () => {
      const r = await nativeRequest(session, requestVars('GET', '/users/42?sort=asc'));
      assert.equal(r.status, 200);
      assert.deepEqual(JSON.parse(r.body.toString()), { id: '42', query: { sort: 'asc' }, protocol: 'http', ip: '127.0.0.1' });
    });

    test('express.json() parses a body of known length and one streamed without a length', async () => {
      const body = Buffer.from(JSON.stringify({ hello: 'wörld', n: [1, 2, 3] }));
      const sized = await nativeRequest(session, [...requestVars('POST', '/json', [], String(body.length)), 'CONTENT_TYPE', 'application/json'], body);
      assert.equal(sized.status, 200);
      assert.deepEqual(JSON.parse(sized.body.toString()), { received: { hello: 'wörld', n: [1, 2, 3] } });
      const streamed = await nativeRequest(session, [...requestVars('POST', '/json'), 'CONTENT_TYPE', 'application/json'], body);
      assert.deepEqual(JSON.parse(streamed.body.toString()), { received: { hello: 'wörld', n: [1, 2, 3] } });
    });

    test('cookies in and out', async () => {
      const r = await nativeRequest(session, requestVars('GET', '/cookies', [['cookie', 'a=1; b=2']]));
      assert.deepEqual(JSON.parse(r.body.toString()), { received: { a: '1', b: '2' } });
      assert.deepEqual(cookiesOf(r.headers), ['session=abc123; Path=/; HttpOnly', 'theme=dark; Path=/']);
    });

    test('redirect', async () => {
      const r = await nativeRequest(session, requestVars('GET', '/redirect'));
      assert.equal(r.status, 302);
      assert.equal(varsHeader(r.headers, 'location'), '/');
    });

    test('res.write streaming and a large body written with backpressure', async () => {
      const s = await nativeRequest(session, requestVars('GET', '/stream?n=4'));
      assert.equal(s.body.toString(), 'chunk 0\nchunk 1\nchunk 2\nchunk 3\n');
      assert.equal(varsHeader(s.headers, 'transfer-encoding'), undefined, 'hop-by-hop framing of the in-memory leg must not leak');
      const n = 5 * 1024 * 1024 + 7;
      const b = await nativeRequest(session, requestVars('GET', `/big?n=${n}`), null, 60_000);
      assert.equal(b.body.length, n);
    });

    test('res.sendFile, and HEAD of it', async () => {
      const r = await nativeRequest(session, requestVars('GET', '/file'));
      assert.equal(r.status, 200);
      assert.ok(r.body.equals(FILE));
      assert.equal(varsHeader(r.headers, 'content-length'), String(FILE.length));
      const h = await nativeRequest(session, requestVars('HEAD', '/file'));
      assert.equal(h.status, 200);
      assert.equal(h.body.length, 0);
    });

    test('a route error becomes the app error handler 500', async () => {
      const r = await nativeRequest(session, requestVars('GET', '/fail'));
      assert.equal(r.status, 500);
      assert.equal(r.body.toString(), 'Internal Server Error\n');
    });
  });

  describe('through NGINX uwsgi_pass', () => {
    const get = (p: string, extra = '') => rawHttp(nginx.ports[0], `GET ${p} HTTP/1.1\r\nHost: x\r\n${extra}Connection: close\r\n\r\n`);

    test('routing, cookies (two Cookie headers joined), redirect', async () => {
      const u = await get('/users/7?x=y');
      assert.deepEqual(JSON.parse(u.body.toString()), { id: '7', query: { x: 'y' }, protocol: 'http', ip: '127.0.0.1' });
      const c = await get('/cookies', 'Cookie: a=1\r\nCookie: b=2\r\n');
      assert.deepEqual(JSON.parse(c.body.toString()), { received: { a: '1', b: '2' } });
      assert.deepEqual(cookiesOf(c.rawHeaders), ['session=abc123; Path=/; HttpOnly', 'theme=dark; Path=/']);
      const r = await get('/redirect');
      assert.equal(r.status, 302);
      assert.equal(rawHeader(r.rawHeaders, 'location'), '/');
    });

    test('JSON POST, streamed chunks, sendFile', async () => {
      const body = JSON.stringify({ a: 1 });
      const p = await rawHttp(nginx.ports[0], `POST /json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
      assert.deepEqual(JSON.parse(p.body.toString()), { received: { a: 1 } });
      const s = await get('/stream?n=3');
      assert.equal(s.body.toString(), 'chunk 0\nchunk 1\nchunk 2\n');
      const f = await get('/file');
      assert.ok(f.body.equals(FILE));
    });
  });
});
