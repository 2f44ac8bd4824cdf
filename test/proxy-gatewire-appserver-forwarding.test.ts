// proxy → `gatewire serve` over the native protocol, on TCP and on a Unix
// socket: requests and bodies arrive intact, X-Forwarded-* and X-Request-Id
// are set as documented, SSE events reach the client as they are sent, the
// access log carries the fields it promises, and routes match host + prefix.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import { test } from 'node:test';
import { accessLog, call, startAppserver, startProxy } from './helpers/proxy-harness.ts';

type Echo = { name: string; path: string; query: string; method: string; bodyLen: number; headers: Record<string, string>; vars: Record<string, string> };

for (const unix of [false, true]) {
  test(`proxy forwards to a gatewire appserver over ${unix ? 'a Unix socket' : 'TCP'}`, { timeout: 60000 }, async (t) => {
    const app = await startAppserver(t, 'A', { unix });
    const proxy = await startProxy(t, { upstreams: { app: { protocol: 'gatewire', servers: [app.address] } } });

    const get = await call(`${proxy.url}/some/path?x=1&y=%20z`, { headers: { 'x-request-id': 'req-abc-123', 'x-forwarded-for': '203.0.113.9' } });
    assert.equal(get.status, 200);
    const echo = get.json<Echo>();
    assert.equal(echo.name, 'A');
    assert.equal(echo.path, '/some/path');
    assert.equal(echo.query, '?x=1&y=%20z');
    assert.equal(echo.headers['x-request-id'], 'req-abc-123', 'an incoming request id is kept');
    assert.equal(get.headers['x-request-id'], 'req-abc-123', 'and returned to the client');
    // trust_proxy defaults to false: the client's own X-Forwarded-For is not trusted
    assert.equal(echo.headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(echo.headers['x-forwarded-proto'], 'http');
    assert.equal(echo.headers['x-forwarded-host'], `127.0.0.1:${proxy.port}`);
    assert.equal(echo.headers.host, `127.0.0.1:${proxy.port}`, 'the app sees the client Host');
    assert.equal(echo.vars.REMOTE_ADDR, '127.0.0.1');
    assert.equal(echo.vars.REQUEST_METHOD, 'GET');
    assert.equal(echo.vars.PATH_INFO, '/some/path');
    assert.equal(echo.vars.QUERY_STRING, 'x=1&y=%20z');

    const generated = await call(`${proxy.url}/`);
    const id = generated.json<Echo>().headers['x-request-id'];
    assert.match(id, /^[0-9a-f-]{36}$/, 'a request id is generated when absent');
    assert.equal(generated.headers['x-request-id'], id);

    // hop-by-hop headers never reach the app
    const hopReq = http.get(`${proxy.url}/hop`, { headers: { connection: 'keep-alive, x-secret', 'x-secret': 's', 'keep-alive': '5', te: 'trailers' } });
    const [hopRes] = (await once(hopReq, 'response')) as [http.IncomingMessage];
    let hopText = '';
    for await (const d of hopRes) hopText += d;
    const hh = (JSON.parse(hopText) as Echo).headers;
    assert.equal(hh['x-secret'], undefined);
    assert.equal(hh['keep-alive'], undefined);
    assert.equal(hh.te, undefined);

    // a body with a length, and a chunked one (unknown length) of 1 MiB less a byte
    const body = Buffer.alloc(300_000, 7);
    const post = await call(`${proxy.url}/upload`, { method: 'POST', body, headers: { 'content-type': 'application/octet-stream' } });
    assert.equal(post.json<Echo>().bodyLen, 300_000);
    const chunks = async function* () {
      for (let i = 0; i < 16; i++) yield Buffer.alloc(65536 - (i === 15 ? 1 : 0), i);
    };
    const chunked = await call(`${proxy.url}/upload`, { method: 'PUT', body: chunks() });
    assert.equal(chunked.status, 200);
    assert.equal(chunked.json<Echo>().bodyLen, 1024 * 1024 - 1);
    assert.equal(chunked.json<Echo>().method, 'PUT');

    // the access log names method, path, status, bytes, upstream host, upstream time, request id
    // the log is buffered and flushed every second (proxy/access-log.ts)
    let entry: Record<string, unknown> | undefined;
    for (let i = 0; i < 40 && entry === undefined; i++) {
      await new Promise((r) => setTimeout(r, 100));
      entry = accessLog(proxy).find((e) => e.reqId === 'req-abc-123');
    }
    assert.ok(entry, 'access log entry for the request');
    assert.equal(entry.method, 'GET');
    assert.equal(entry.path, '/some/path?x=1&y=%20z');
    assert.equal(entry.status, 200);
    assert.equal(entry.upstream, app.address);
    assert.equal(typeof entry.upstream_ms, 'number');
    assert.ok((entry.bytes as number) > 100, `bytes ${entry.bytes}`);
  });
}

test('server-sent events reach the client one by one, as the app sends them', { timeout: 60000 }, async (t) => {
  const app = await startAppserver(t, 'sse');
  const proxy = await startProxy(t, { upstreams: { app: { protocol: 'gatewire', servers: [app.address] } } });
  const req = http.get(`${proxy.url}/sse?n=4&gap=500`);
  const [res] = (await once(req, 'response')) as [http.IncomingMessage];
  assert.equal(res.statusCode, 200);
  assert.equal(res.headers['content-type'], 'text/event-stream');
  const arrivals: Array<{ at: number; text: string }> = [];
  const t0 = Date.now();
  res.setEncoding('utf8');
  res.on('data', (d: string) => arrivals.push({ at: Date.now() - t0, text: d }));
  await once(res, 'end');
  const events = arrivals.map((a) => a.text).join('');
  assert.equal(events, 'data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\n');
  // 4 events 500 ms apart: they must arrive spread out, not all at the end
  assert.ok(arrivals.length >= 3, `events arrived in ${arrivals.length} reads`);
  const spread = arrivals[arrivals.length - 1].at - arrivals[0].at;
  assert.ok(spread >= 1000, `events arrived within ${spread} ms of each other: buffered`);
});

test('routes match host, then the longest path prefix; strip_prefix removes it', { timeout: 60000 }, async (t) => {
  const [a, b, c] = await Promise.all([startAppserver(t, 'A'), startAppserver(t, 'B'), startAppserver(t, 'C')]);
  const proxy = await startProxy(t, {
    routes: [
      { match: { path_prefix: '/' }, upstream: 'a' },
      { match: { path_prefix: '/api' }, upstream: 'b', strip_prefix: true },
      { match: { host: 'c.example.test', path_prefix: '/' }, upstream: 'c' },
    ],
    upstreams: { a: { servers: [a.address] }, b: { servers: [b.address] }, c: { servers: [c.address] } },
  });
  const r1 = (await call(`${proxy.url}/x`)).json<Echo>();
  assert.deepEqual([r1.name, r1.path], ['A', '/x']);
  const r2 = (await call(`${proxy.url}/api/users?id=3`)).json<Echo>();
  assert.deepEqual([r2.name, r2.path, r2.query], ['B', '/users', '?id=3']);
  const r3 = (await call(`${proxy.url}/api`)).json<Echo>();
  assert.deepEqual([r3.name, r3.path], ['B', '/']);
  const r4 = (await call(`${proxy.url}/apix`)).json<Echo>();
  assert.deepEqual([r4.name, r4.path], ['A', '/apix'], 'a prefix matches whole segments');
  const r5 = (await call(`${proxy.url}/api/x`, { headers: { host: 'C.example.test:8080' } })).json<Echo>();
  assert.equal(r5.name, 'C', 'host routes win over any-host routes');
});

test('trust_proxy: a trusted peer keeps its X-Forwarded-* and the client address is appended', { timeout: 60000 }, async (t) => {
  const app = await startAppserver(t, 'T');
  const proxy = await startProxy(t, { trust_proxy: ['127.0.0.0/8'], upstreams: { app: { servers: [app.address] } } });
  const r = await call(`${proxy.url}/t`, { headers: { 'x-forwarded-for': '203.0.113.9', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'edge.example' } });
  const h = r.json<Echo>().headers;
  assert.equal(h['x-forwarded-for'], '203.0.113.9, 127.0.0.1');
  assert.equal(h['x-forwarded-proto'], 'https');
  assert.equal(h['x-forwarded-host'], 'edge.example');
  const untrusted = await call(`${proxy.url}/t`, { from: '127.0.0.1', headers: {} });
  assert.equal(untrusted.json<Echo>().headers['x-forwarded-for'], '127.0.0.1');
});
