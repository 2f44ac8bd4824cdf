// routes[].static through a real `gatewire proxy` process: NGINX's root/alias, index, try_files
// (to a file and to the route's upstream), expires-like cache_control by glob, gzip_static-like
// sidecars, strong validators with 304, ranges with 206/416, HEAD and 405 — and the safety
// list: nothing outside the root is ever served, however the path is spelled.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { brotliCompressSync, gzipSync } from 'node:zlib';
import { rawHeader, rawHttp } from './helpers/appserver-nginx.ts';
import { tempDir } from './helpers/net.ts';
import { call, startNodeBackend, startProxy } from './helpers/proxy-harness.ts';

const SECRET = 'TOP-SECRET-OUTSIDE-THE-ROOT';

function tree(): { root: string; cleanup: () => void; big: Buffer } {
  const { dir, cleanup } = tempDir('gw-static-');
  const root = path.join(dir, 'www');
  mkdirSync(path.join(root, 'sub'), { recursive: true });
  mkdirSync(path.join(root, 'assets'), { recursive: true });
  writeFileSync(path.join(dir, 'secret.txt'), SECRET);
  writeFileSync(path.join(dir, 'secret.txt.gz'), gzipSync(SECRET));
  writeFileSync(path.join(root, 'index.html'), '<h1>home</h1>');
  writeFileSync(path.join(root, 'sub', 'index.html'), '<h1>sub</h1>');
  writeFileSync(path.join(root, 'style.css'), 'body { color: red }\n'.repeat(10));
  const js = 'console.log("app");\n'.repeat(200);
  writeFileSync(path.join(root, 'assets', 'app.3f2a9c.js'), js);
  writeFileSync(path.join(root, 'assets', 'app.3f2a9c.js.br'), brotliCompressSync(js));
  writeFileSync(path.join(root, 'assets', 'app.3f2a9c.js.gz'), gzipSync(js));
  const big = randomBytes(1024 * 1024 + 17);
  writeFileSync(path.join(root, 'big.bin'), big);
  writeFileSync(path.join(root, '.env'), 'PASSWORD=hunter2');
  writeFileSync(path.join(root, 'inside.txt'), 'inside');
  // the sidecar of a file inside points outside: it must never be chosen
  symlinkSync(path.join(dir, 'secret.txt.gz'), path.join(root, 'inside.txt.gz'));
  symlinkSync(path.join(dir, 'secret.txt'), path.join(root, 'link-out.txt'));
  symlinkSync(dir, path.join(root, 'dir-out'));
  symlinkSync(path.join(root, 'style.css'), path.join(root, 'link-in.css'));
  const old = new Date('2024-01-02T03:04:05Z');
  utimesSync(path.join(root, 'style.css'), old, old);
  return { root, cleanup, big };
}

test('static files: validators, ranges, sidecars, index, try_files, cache_control, fallback to the upstream', { timeout: 60000 }, async (t) => {
  const { root, cleanup, big } = tree();
  t.after(cleanup);
  const app = await startNodeBackend(t, 'app');
  const proxy = await startProxy(t, {
    routes: [
      {
        match: { path_prefix: '/static' },
        strip_prefix: true,
        static: {
          root,
          precompressed: ['br', 'gzip'],
          cache_control: { 'assets/**': 'public, max-age=31536000, immutable', '*.html': 'no-cache' },
        },
      },
      { match: { path_prefix: '/spa' }, strip_prefix: true, static: { root, try_files: ['$uri', '/index.html'] } },
      { match: { path_prefix: '/' }, upstream: 'app', static: { root, try_files: ['$uri', '$uri/', '@upstream'] } },
    ],
    upstreams: { app: { protocol: 'http', servers: [app.address] } },
  });
  const base = proxy.url;

  const css = await call(`${base}/static/style.css`);
  assert.equal(css.status, 200);
  assert.equal(css.headers['content-type'], 'text/css; charset=utf-8');
  assert.equal(css.text, 'body { color: red }\n'.repeat(10));
  assert.equal(css.headers['content-length'], String(css.text.length));
  assert.equal(css.headers['accept-ranges'], 'bytes');
  assert.equal(css.headers['last-modified'], 'Tue, 02 Jan 2024 03:04:05 GMT');
  const etag = css.headers.etag as string;
  assert.match(etag, /^"[0-9a-f]+-[0-9a-f]+"$/, 'a strong ETag');

  assert.equal((await call(`${base}/static/style.css`, { headers: { 'if-none-match': etag } })).status, 304);
  assert.equal((await call(`${base}/static/style.css`, { headers: { 'if-none-match': `W/${etag}` } })).status, 304, 'weak comparison for If-None-Match');
  assert.equal((await call(`${base}/static/style.css`, { headers: { 'if-none-match': '"other"' } })).status, 200);
  assert.equal((await call(`${base}/static/style.css`, { headers: { 'if-modified-since': 'Tue, 02 Jan 2024 03:04:05 GMT' } })).status, 304);
  assert.equal((await call(`${base}/static/style.css`, { headers: { 'if-modified-since': 'Mon, 01 Jan 2024 00:00:00 GMT' } })).status, 200);
  assert.equal((await call(`${base}/static/style.css`, { headers: { 'if-match': '"nope"' } })).status, 412);

  const head = await call(`${base}/static/style.css`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.text, '');
  assert.equal(head.headers['content-length'], String(css.text.length));
  assert.equal(head.headers.etag, etag);

  const post = await call(`${base}/static/style.css`, { method: 'POST', body: 'x' });
  assert.equal(post.status, 405);
  assert.equal(post.headers.allow, 'GET, HEAD');

  // ranges
  const part = await fetchBytes(`${base}/static/big.bin`, { range: 'bytes=100-199' });
  assert.equal(part.status, 206);
  assert.equal(part.headers.get('content-range'), `bytes 100-199/${big.length}`);
  assert.deepEqual(part.body, big.subarray(100, 200));
  const tail = await fetchBytes(`${base}/static/big.bin`, { range: 'bytes=-10' });
  assert.equal(tail.status, 206);
  assert.deepEqual(tail.body, big.subarray(big.length - 10));
  const whole = await fetchBytes(`${base}/static/big.bin`);
  assert.equal(whole.status, 200);
  assert.ok(whole.body.equals(big), 'a 1 MiB file streams whole');
  const bad = await call(`${base}/static/big.bin`, { headers: { range: `bytes=${big.length + 5}-` } });
  assert.equal(bad.status, 416);
  assert.equal(bad.headers['content-range'], `bytes */${big.length}`);
  const bigEtag = whole.headers.get('etag') as string;
  assert.equal((await fetchBytes(`${base}/static/big.bin`, { range: 'bytes=0-9', 'if-range': bigEtag })).status, 206, 'If-Range with the strong ETag resumes');
  assert.equal((await fetchBytes(`${base}/static/big.bin`, { range: 'bytes=0-9', 'if-range': '"stale"' })).status, 200, 'a stale If-Range gets the whole file');

  // precompressed sidecars, chosen by q-value, each with its own ETag, Vary always
  const js = 'console.log("app");\n'.repeat(200);
  const plain = await fetchBytes(`${base}/static/assets/app.3f2a9c.js`, { 'accept-encoding': 'identity' });
  assert.equal(plain.body.toString(), js);
  assert.equal(plain.headers.get('content-encoding'), null);
  assert.equal(plain.headers.get('vary'), 'Accept-Encoding');
  assert.equal(plain.headers.get('cache-control'), 'public, max-age=31536000, immutable');
  const br = await fetchBytes(`${base}/static/assets/app.3f2a9c.js`, { 'accept-encoding': 'gzip, br' });
  assert.equal(br.headers.get('content-encoding'), 'br');
  assert.equal(br.headers.get('content-type'), 'application/javascript; charset=utf-8');
  assert.deepEqual(br.body, brotliCompressSync(js));
  const gz = await fetchBytes(`${base}/static/assets/app.3f2a9c.js`, { 'accept-encoding': 'gzip;q=1, br;q=0.5' });
  assert.equal(gz.headers.get('content-encoding'), 'gzip');
  assert.deepEqual(gz.body, gzipSync(js));
  const tags = new Set([plain.headers.get('etag'), br.headers.get('etag'), gz.headers.get('etag')]);
  assert.equal(tags.size, 3, `one ETag per encoding: ${[...tags].join(' ')}`);
  const brAgain = await fetchBytes(`${base}/static/assets/app.3f2a9c.js`, { 'accept-encoding': 'br', 'if-none-match': br.headers.get('etag') as string });
  assert.equal(brAgain.status, 304);

  // index, directory redirect, cache_control by glob
  const home = await call(`${base}/static/`);
  assert.equal(home.text, '<h1>home</h1>');
  assert.equal(home.headers['cache-control'], 'no-cache');
  const redirect = await call(`${base}/static/sub?x=1`);
  assert.equal(redirect.status, 301);
  assert.equal(redirect.headers.location, '/static/sub/?x=1');
  assert.equal((await call(`${base}/static/sub/`)).text, '<h1>sub</h1>');
  assert.equal((await call(`${base}/static/missing.txt`)).status, 404);
  assert.equal((await call(`${base}/static/link-in.css`)).status, 200, 'a symlink that stays inside the root is followed');

  // try_files: a single-page app's fallback file, and the route's upstream
  assert.equal((await call(`${base}/spa/some/client/route`)).text, '<h1>home</h1>');
  const fromApp = await call(`${base}/api/users?id=3`);
  assert.equal(fromApp.status, 200);
  assert.equal(fromApp.json<{ name: string; path: string; query: string }>().path, '/api/users');
  assert.equal((await call(`${base}/style.css`)).text, css.text, 'a file wins over the upstream');
  const postToApp = await call(`${base}/style.css`, { method: 'POST', body: 'x' });
  assert.equal(postToApp.json<{ method: string }>().method, 'POST', 'with @upstream, what a file cannot answer goes to the app');

  const metrics = await call(`${proxy.admin}/metrics`);
  assert.match(metrics.text, /gatewire_static_responses_total\{route="\/static"\} \d+/);
  assert.match(metrics.text, /gatewire_static_bytes_total\{route="\/static"\} \d+/);
});

test('static files: nothing outside the root is served, however the path is spelled', { timeout: 60000 }, async (t) => {
  const { root, cleanup } = tree();
  t.after(cleanup);
  const proxy = await startProxy(t, {
    routes: [{ match: { path_prefix: '/' }, static: { root, precompressed: true } }],
    upstreams: { unused: { protocol: 'http', servers: ['127.0.0.1:9'] } },
  });
  const attempts: Array<[string, number[]]> = [
    ['/../secret.txt', [400]],
    ['/sub/../../secret.txt', [400]],
    ['/%2e%2e/secret.txt', [400]],
    ['/%2E%2E%2Fsecret.txt', [400]],
    ['/sub%2f..%2f..%2fsecret.txt', [400]],
    ['/..%5csecret.txt', [400]],
    ['/sub%5c..%5c..%5csecret.txt', [400]],
    ['/..\\secret.txt', [400]],
    ['/index.html%00.css', [400]],
    ['/%00', [400]],
    ['/%', [400]],
    ['/link-out.txt', [404]],
    ['/dir-out/secret.txt', [404]],
    ['/.env', [403]],
    ['/%2eenv', [403]],
    ['/sub/./index.html', [400]],
  ];
  for (const [target, statuses] of attempts) {
    const res = await rawHttp(proxy.port, `GET ${target} HTTP/1.1\r\nHost: localhost\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n`);
    assert.ok(statuses.includes(res.status), `${target}: ${res.status}`);
    assert.ok(!res.body.toString('latin1').includes(SECRET) && !res.body.toString().includes('hunter2'), `${target} leaked a file`);
  }
  // a file inside whose .gz sidecar is a symlink to a file outside: the plain file, never the sidecar
  const inside = await rawHttp(proxy.port, 'GET /inside.txt HTTP/1.1\r\nHost: localhost\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n');
  assert.equal(inside.status, 200);
  assert.equal(inside.body.toString(), 'inside');
  assert.equal(rawHeader(inside.rawHeaders, 'content-encoding'), undefined);

  // dotfiles: allow serves them when asked for
  const open = await startProxy(t, {
    routes: [{ match: { path_prefix: '/' }, static: { root, dotfiles: 'allow' } }],
    upstreams: { unused: { protocol: 'http', servers: ['127.0.0.1:9'] } },
  });
  assert.equal((await call(`${open.url}/.env`)).text, 'PASSWORD=hunter2');
});

async function fetchBytes(url: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Headers; body: Buffer }> {
  // undici's fetch would decode content-encoding: request() hands over the bytes as sent
  const { request } = await import('undici');
  const res = await request(url, { headers });
  const body = Buffer.from(await res.body.arrayBuffer());
  const h = new Headers();
  for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) h.set(k, Array.isArray(v) ? v.join(', ') : v);
  return { status: res.statusCode, headers: h, body };
}
