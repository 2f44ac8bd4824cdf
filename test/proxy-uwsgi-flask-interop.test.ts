// proxy → a real uWSGI (Debian's uwsgi + python3 plugin) running Flask, over
// uwsgi classic packets: vars as NGINX's uwsgi_params sends them, bodies with
// a length and chunked ones (buffered to get a CONTENT_LENGTH, as NGINX does),
// repeated response headers, streamed responses; on TCP and on a Unix socket.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { call, startProxy, startUwsgiFlask } from './helpers/proxy-harness.ts';

type FlaskEcho = { name: string; path: string; query: string; method: string; bodyLen: number; bodySum: number; headers: Record<string, string>; environ: Record<string, string> };

for (const unix of [false, true]) {
  test(`proxy speaks uwsgi to a real uWSGI + Flask over ${unix ? 'a Unix socket' : 'TCP'}`, { timeout: 90000 }, async (t) => {
    const flask = await startUwsgiFlask(t, 'flask', { unix });
    const proxy = await startProxy(t, { upstreams: { py: { protocol: 'uwsgi', servers: [flask.address] } } });

    const get = await call(`${proxy.url}/hello/w%C3%B6rld?a=1&b=two`, { headers: { 'x-custom': 'yes', cookie: 'k=v' } });
    assert.equal(get.status, 200, get.text);
    const e = get.json<FlaskEcho>();
    assert.equal(e.name, 'flask');
    assert.equal(e.method, 'GET');
    assert.equal(e.path, '/hello/wörld');
    assert.equal(e.query, 'a=1&b=two');
    assert.equal(e.headers['X-Custom'], 'yes');
    assert.equal(e.headers.Cookie, 'k=v');
    assert.equal(e.headers['X-Forwarded-For'], '127.0.0.1');
    assert.equal(e.environ.REMOTE_ADDR, '127.0.0.1');
    assert.equal(e.environ.REQUEST_URI, '/hello/w%C3%B6rld?a=1&b=two');
    assert.equal(e.environ.SERVER_PROTOCOL, 'HTTP/1.1');
    assert.match(get.headers['x-request-id'] as string, /^[0-9a-f-]{36}$/);
    // two Set-Cookie headers stay two headers
    assert.deepEqual(get.headers['set-cookie'], ['a=1; Path=/', 'b=2; Path=/']);

    const body = Buffer.alloc(200_000);
    for (let i = 0; i < body.length; i++) body[i] = i % 251;
    const sum = body.reduce((s, x) => s + x, 0) % 65536;
    const post = await call(`${proxy.url}/upload`, { method: 'POST', body, headers: { 'content-type': 'application/octet-stream' } });
    assert.equal(post.status, 200, post.text);
    assert.deepEqual([post.json<FlaskEcho>().bodyLen, post.json<FlaskEcho>().bodySum], [200_000, sum]);

    const chunks = async function* () {
      for (let off = 0; off < body.length; off += 30_000) yield body.subarray(off, off + 30_000);
    };
    const chunked = await call(`${proxy.url}/upload`, { method: 'POST', body: chunks() });
    assert.equal(chunked.status, 200, chunked.text);
    const ce = chunked.json<FlaskEcho>();
    assert.deepEqual([ce.bodyLen, ce.bodySum, ce.environ.CONTENT_LENGTH], [200_000, sum, '200000']);

    const streamed = await call(`${proxy.url}/stream`);
    assert.equal(streamed.text, 'part 0\npart 1\npart 2\n');

    const head = await call(`${proxy.url}/x`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.text, '');
  });
}
