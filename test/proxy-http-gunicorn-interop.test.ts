// proxy → HTTP/1.1 upstreams through undici: Debian's gunicorn running the
// same Flask app, and a node:http server; keep-alive connections are reused.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { call, startGunicornFlask, startNodeBackend, startProxy } from './helpers/proxy-harness.ts';

type FlaskEcho = { name: string; path: string; query: string; method: string; bodyLen: number; bodySum: number; headers: Record<string, string>; environ: Record<string, string> };

test('proxy forwards HTTP/1.1 to gunicorn + Flask', { timeout: 90000 }, async (t) => {
  const g = await startGunicornFlask(t, 'gunicorn');
  const proxy = await startProxy(t, { upstreams: { py: { protocol: 'http', servers: [g.address] } } });
  const get = await call(`${proxy.url}/a/b?c=d`, { headers: { 'x-request-id': 'gid-1' } });
  assert.equal(get.status, 200, get.text);
  const e = get.json<FlaskEcho>();
  assert.deepEqual([e.name, e.path, e.query], ['gunicorn', '/a/b', 'c=d']);
  assert.equal(e.headers['X-Request-Id'], 'gid-1');
  assert.equal(e.headers['X-Forwarded-Proto'], 'http');
  assert.deepEqual(get.headers['set-cookie'], ['a=1; Path=/', 'b=2; Path=/']);

  const body = Buffer.alloc(150_000, 3);
  const post = await call(`${proxy.url}/up`, { method: 'POST', body });
  assert.deepEqual([post.json<FlaskEcho>().bodyLen, post.json<FlaskEcho>().bodySum], [150_000, (150_000 * 3) % 65536]);
  const chunks = async function* () {
    for (let i = 0; i < 5; i++) yield Buffer.alloc(10_000, 1);
  };
  const chunked = await call(`${proxy.url}/up`, { method: 'POST', body: chunks() });
  assert.equal(chunked.json<FlaskEcho>().bodyLen, 50_000);
  const streamed = await call(`${proxy.url}/stream`);
  assert.equal(streamed.text, 'part 0\npart 1\npart 2\n');
});

test('proxy forwards HTTP/1.1 to node:http and keeps connections alive', { timeout: 60000 }, async (t) => {
  const b = await startNodeBackend(t, 'node');
  const proxy = await startProxy(t, { upstreams: { n: { protocol: 'http', servers: [b.address], connections_per_server: 2 } } });
  const ports = new Set<number>();
  const xff = new Set<string>();
  for (let i = 0; i < 20; i++) {
    const r = await call(`${proxy.url}/p${i}`);
    assert.equal(r.status, 200);
    const h = r.json<{ path: string; headers: Record<string, string>; peerPort: number }>();
    assert.equal(h.path, `/p${i}`);
    xff.add(h.headers['x-forwarded-for']);
    ports.add(h.peerPort);
  }
  assert.deepEqual([...xff], ['127.0.0.1']);
  // 20 sequential requests over at most connections_per_server upstream connections
  assert.ok(ports.size <= 2, `${ports.size} upstream connections for 20 requests`);
  const status = await call(`${proxy.admin}/status`);
  const host = status.json<{ upstreams: Array<{ hosts: Array<{ requests: number }> }> }>().upstreams[0].hosts[0];
  assert.equal(host.requests, 20);
  // what an operator watches for leaks: handles by type, heap, RSS, open fds
  const proc = status.json<{ process: { handles: Record<string, number>; heapUsed: number; rss: number; fds: number } }>().process;
  assert.ok(proc.handles.TCPServerWrap >= 2, `listener and admin server among the handles: ${JSON.stringify(proc.handles)}`);
  assert.ok(proc.handles.TCPSocketWrap >= 1, `the upstream keep-alive connections: ${JSON.stringify(proc.handles)}`);
  assert.ok(proc.heapUsed > 0 && proc.rss >= proc.heapUsed, JSON.stringify(proc));
  assert.ok(proc.fds >= 4, `open fds: ${proc.fds}`);
});
