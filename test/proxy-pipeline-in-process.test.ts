// The proxy's pipeline in one process: Fastify inject() in front, a fake
// transport behind, so that routing, the retry loop, host state and the error
// mapping are checked without a socket. What real servers do stays in the
// real-process tests.
import assert from 'node:assert/strict';
import net from 'node:net';
import { Readable } from 'node:stream';
import test, { type TestContext } from 'node:test';
import pino from 'pino';
import { parseConfig } from '../proxy/config.ts';
import { connectError, HeadersTooLargeError, protocolFailure, proxyFailure, refusedStream, timeoutError, type UpstreamError } from '../proxy/errors.ts';
import type { Host } from '../proxy/hosts.ts';
import { ProxyServer } from '../proxy/server.ts';
import type { Transport, TransportRequest, TransportResponse } from '../proxy/transports/transport.ts';

type Behaviour = (host: Host, req: TransportRequest) => TransportResponse | UpstreamError | Promise<TransportResponse | UpstreamError>;

/** A transport whose answer per try is a function of the host: records every try. */
class FakeTransport implements Transport {
  readonly tries: Array<{ host: string; req: TransportRequest }> = [];
  behaviour: Behaviour;
  constructor(behaviour: Behaviour) {
    this.behaviour = behaviour;
  }
  async request(host: Host, req: TransportRequest): Promise<TransportResponse> {
    this.tries.push({ host: host.address, req });
    const out = await this.behaviour(host, req);
    if (out instanceof Error) throw out;
    return out;
  }
  closeHost(): void {}
  async close(): Promise<void> {}
}

function ok(text: string, headers: Record<string, string> = {}): TransportResponse {
  return { statusCode: 200, headers: { 'content-type': 'text/plain', ...headers }, body: Readable.from([Buffer.from(text)]) };
}

async function proxyWith(t: TestContext, yaml: string, behaviour: Behaviour): Promise<{ proxy: ProxyServer; transport: FakeTransport }> {
  const transport = new FakeTransport(behaviour);
  const config = parseConfig(`listen: { host: 127.0.0.1, port: 0 }\nadmin: false\nlog: { access: false }\n${yaml}`);
  const proxy = new ProxyServer(config, { logger: pino({ level: 'silent' }), transportFactory: () => transport });
  await proxy.app.ready();
  t.after(() => proxy.close());
  return { proxy, transport };
}

const THREE = 'routes: [{ upstream: app }]\nupstreams: { app: { servers: [{ address: "127.0.0.1:1" }, { address: "127.0.0.1:2" }, { address: "127.0.0.1:3" }], retries: { tries: 1 } } }\n';

test('a refused connection goes to every other server once, whatever retries.tries says, never twice to one host', async (t) => {
  const { proxy, transport } = await proxyWith(t, THREE, (host) => (host.address === '127.0.0.1:3' ? ok('three') : connectError(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }), true)));
  const res = await proxy.app.inject({ method: 'POST', url: '/x', payload: 'body' });
  assert.equal(res.statusCode, 200);
  assert.equal(res.body, 'three');
  const hosts = transport.tries.map((x) => x.host);
  assert.equal(new Set(hosts).size, hosts.length, `each host once: ${hosts}`);
  assert.ok(hosts.length <= 3);
});

test('a host that refused is skipped at once by the requests behind it', async (t) => {
  const { proxy, transport } = await proxyWith(t, THREE, (host) => (host.address === '127.0.0.1:1' ? connectError(new Error('ECONNREFUSED'), true) : ok(host.address)));
  for (let i = 0; i < 9; i++) assert.equal((await proxy.app.inject({ url: '/' })).statusCode, 200);
  assert.equal(transport.tries.filter((x) => x.host === '127.0.0.1:1').length, 1, 'the refusing host was tried by one request only');
});

test('every server refused: 502 (the last failure), then 503 while all are out', async (t) => {
  const { proxy, transport } = await proxyWith(t, THREE, () => connectError(new Error('ECONNREFUSED'), true));
  assert.equal((await proxy.app.inject({ url: '/' })).statusCode, 502);
  assert.equal(transport.tries.length, 3);
  const second = await proxy.app.inject({ url: '/' });
  assert.equal(second.statusCode, 503);
  assert.equal(second.body, '503 Service Unavailable\n');
});

test('a failure after the request may have reached the app is retried only within tries and methods', async (t) => {
  const yaml = 'routes: [{ upstream: app }]\nupstreams: { app: { servers: [{ address: "127.0.0.1:1" }, { address: "127.0.0.1:2" }, { address: "127.0.0.1:3" }], retries: { tries: 2, methods: [GET] } } }\n';
  const { proxy, transport } = await proxyWith(t, yaml, () => connectError(new Error('ECONNRESET'), false));
  assert.equal((await proxy.app.inject({ url: '/' })).statusCode, 502);
  assert.equal(transport.tries.length, 2, 'GET: tries: 2');
  assert.equal((await proxy.app.inject({ method: 'POST', url: '/', payload: 'x' })).statusCode, 502);
  assert.equal(transport.tries.length, 3, 'POST: not in retries.methods, one try');
});

test('errors map to the statuses NGINX users expect', async (t) => {
  const cases: Array<[UpstreamError, number]> = [
    [timeoutError('no response head'), 504],
    [protocolFailure(new Error('garbage')), 502],
    [new HeadersTooLargeError('vars') as UpstreamError, 431],
    [refusedStream(new Error('GOAWAY')), 502],
  ];
  for (const [err, status] of cases) {
    const { proxy } = await proxyWith(t, 'routes: [{ upstream: app }]\nupstreams: { app: { servers: [{ address: "127.0.0.1:1" }] } }\n', () => err);
    const res = await proxy.app.inject({ url: '/' });
    assert.equal(res.statusCode, status, err.code);
    assert.match(res.headers['content-type'] as string, /^text\/plain/);
    assert.ok(res.headers['x-request-id']);
  }
});

test('a single server is never taken out by max_fails (NGINX), and the proxy\'s own failures never count', async (t) => {
  const yaml = 'routes: [{ upstream: app }]\nupstreams: { app: { servers: [{ address: "127.0.0.1:1" }], max_fails: 1, fail_timeout: 60s } }\n';
  let fail = true;
  const { proxy } = await proxyWith(t, yaml, () => (fail ? timeoutError('slow') : ok('fine')));
  assert.equal((await proxy.app.inject({ url: '/' })).statusCode, 504);
  fail = false;
  assert.equal((await proxy.app.inject({ url: '/' })).statusCode, 200);
  const two = 'routes: [{ upstream: app }]\nupstreams: { app: { servers: [{ address: "127.0.0.1:1" }, { address: "127.0.0.1:2" }], max_fails: 1, fail_timeout: 60s, retries: { tries: 1 } } }\n';
  const { proxy: p2, transport } = await proxyWith(t, two, (host) => (host.address === '127.0.0.1:1' ? proxyFailure(new Error('UND_ERR_NOT_SUPPORTED')) : ok('2')));
  for (let i = 0; i < 4; i++) await p2.app.inject({ url: '/' });
  assert.equal(transport.tries.filter((x) => x.host === '127.0.0.1:1').length, 2, 'round robin kept sending to the host the proxy failed on');
});

test('strip_prefix: the app gets the rest of the path, SCRIPT_NAME and X-Forwarded-Prefix; the bare prefix redirects (301)', async (t) => {
  const yaml = 'routes: [{ match: { path_prefix: /flask/ }, upstream: app, strip_prefix: true }, { upstream: other }]\nupstreams: { app: { servers: [{ address: "127.0.0.1:1" }] }, other: { servers: [{ address: "127.0.0.1:2" }] } }\n';
  const { proxy, transport } = await proxyWith(t, yaml, (host) => ok(host.address));
  const res = await proxy.app.inject({ url: '/flask/page?q=1' });
  assert.equal(res.body, '127.0.0.1:1');
  const req = transport.tries[0].req;
  assert.equal(req.path, '/page?q=1');
  assert.equal(req.scriptName, '/flask');
  const headers = req.upstreamHeaders;
  assert.equal(headers[headers.indexOf('x-forwarded-prefix') + 1], '/flask');
  const bare = await proxy.app.inject({ url: '/flask?x=1' });
  assert.equal(bare.statusCode, 301);
  assert.equal(bare.headers.location, '/flask/?x=1');
  assert.equal((await proxy.app.inject({ url: '/flasks' })).body, '127.0.0.1:2');
});

test('hop-by-hop headers, Expect and the client\'s X-Forwarded-* (untrusted) do not go upstream', async (t) => {
  const { proxy, transport } = await proxyWith(t, 'routes: [{ upstream: app }]\nupstreams: { app: { servers: [{ address: "127.0.0.1:1" }] } }\n', () => ok('x', { connection: 'close', 'keep-alive': 'timeout=5' }));
  const res = await proxy.app.inject({
    method: 'PUT',
    url: '/',
    payload: Buffer.alloc(10),
    headers: { expect: '100-continue', connection: 'keep-alive, x-secret', 'x-secret': '1', te: 'trailers', 'x-forwarded-for': '6.6.6.6', 'x-keep': 'yes' },
  });
  assert.equal(res.statusCode, 200);
  assert.equal(res.headers['keep-alive'], undefined);
  const names = transport.tries[0].req.upstreamHeaders.filter((_, i) => i % 2 === 0);
  for (const n of ['expect', 'connection', 'x-secret', 'te']) assert.ok(!names.includes(n), n);
  assert.ok(names.includes('x-keep'));
  const h = transport.tries[0].req.upstreamHeaders;
  assert.equal(h[h.indexOf('x-forwarded-for') + 1], '127.0.0.1');
  assert.deepEqual(transport.tries[0].req.bodyBuffer, Buffer.alloc(10));
});

test('a small body reaches the transport whole: in the head\'s packet, dribbled after it, or never when the client leaves', async (t) => {
  const { proxy, transport } = await proxyWith(t, 'routes: [{ upstream: app }]\nupstreams: { app: { servers: [{ address: "127.0.0.1:1" }] } }\n', () => ok('x'));
  const url = new URL(await proxy.listen());
  const send = async (parts: string[], pauseMs: number, end = true): Promise<string> => {
    const socket = net.connect(Number(url.port), url.hostname);
    let got = '';
    socket.on('data', (c) => {
      got += c.toString();
    });
    for (const p of parts) {
      socket.write(p);
      await new Promise((r) => setTimeout(r, pauseMs));
    }
    if (!end) socket.destroy();
    else await new Promise((r) => setTimeout(r, 50));
    socket.destroy();
    return got;
  };
  const head = 'POST /j HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n';
  assert.match(await send([`${head}{"a":12345}`], 20), /^HTTP\/1.1 200/);
  assert.equal(transport.tries.at(-1)?.req.bodyBuffer?.toString(), '{"a":12345}');
  assert.match(await send([head, '{"a":', '12345}'], 60), /^HTTP\/1.1 200/);
  assert.equal(transport.tries.length, 2);
  assert.equal(transport.tries.at(-1)?.req.bodyBuffer?.toString(), '{"a":12345}');
  await send([head, '{"a":'], 60, false);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(transport.tries.length, 2, 'a body the client never finished is not forwarded');
});

test('routing: by host (any case, any port), 404 without a route, 413 by Content-Length', async (t) => {
  const { proxy, transport } = await proxyWith(t, 'routes: [{ match: { host: api.example.com }, upstream: app }]\nupstreams: { app: { servers: [{ address: "127.0.0.1:1" }], max_body: 1k } }\n', () => ok('x'));
  assert.equal((await proxy.app.inject({ url: '/', headers: { host: 'other.example.com' } })).statusCode, 404);
  assert.equal((await proxy.app.inject({ url: '/', headers: { host: 'API.example.com:8080' } })).statusCode, 200);
  const big = await proxy.app.inject({ method: 'POST', url: '/', headers: { host: 'api.example.com' }, payload: Buffer.alloc(2048) });
  assert.equal(big.statusCode, 413);
  assert.equal(transport.tries.length, 1);
});
