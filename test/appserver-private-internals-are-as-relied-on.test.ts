// The appserver relies on a few private parts of Node's http module
// (appserver/node-internals.ts) and on how undici treats objects that are not
// its own (appserver/undici-globals.ts). These tests fail loudly when a Node
// or undici upgrade changes them, so that the change is met where it is
// documented instead of surfacing as a slower or subtly wrong appserver.
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { createServer, IncomingMessage, ServerResponse } from 'node:http';
import net, { type AddressInfo, type Socket } from 'node:net';
import path from 'node:path';
import { describe, test } from 'node:test';
import type { RequestHead } from '../appserver/exchange.ts';
import { LightRequest } from '../appserver/fetch-request.ts';
import { LightResponse } from '../appserver/fetch-response.ts';
import type { LoadedApp } from '../appserver/app.ts';
import { createLogger } from '../appserver/log.ts';
import { emitDrainIfNeeded, type ResponseOutput, readWaiting, routeResponse, setRawHeaders, socketFd } from '../appserver/node-internals.ts';
import { parseServeOptions, type ServeOptions } from '../appserver/options.ts';
import { AppServer } from '../appserver/server.ts';
import { encodeUwsgiRequest } from '../protocol/uwsgi.ts';
import { tempDir } from './helpers/net.ts';
import { installLightGlobals, NativeRequest, NativeResponse } from '../appserver/undici-globals.ts';

function recorder() {
  const heads: Array<{ status: number; text: string }> = [];
  const pieces: Array<{ data: string; cb: boolean }> = [];
  const output: ResponseOutput = {
    head(res, text) {
      heads.push({ status: res.statusCode, text });
    },
    send(_res, data, encoding, cb) {
      pieces.push({ data: typeof data === 'string' ? Buffer.from(data, encoding ?? 'utf8').toString() : Buffer.from(data).toString(), cb: typeof cb === 'function' });
      if (cb) process.nextTick(cb);
      return false;
    },
  };
  return { heads, pieces, output };
}

/** A response as runNode sets it up, on a socket stand-in that carries no bytes. */
function routed(method = 'GET') {
  const socket = Object.assign(new EventEmitter(), { writable: true, destroyed: false, _writableState: { corked: 0 }, cork() {}, uncork() {}, writableLength: 0 });
  const req = new IncomingMessage(socket as never);
  req.method = method;
  req.httpVersionMajor = 1;
  req.httpVersionMinor = 1;
  const res = new ServerResponse(req);
  const rec = recorder();
  routeResponse(res, rec.output);
  res.assignSocket(socket as never);
  return { req, res, ...rec };
}

describe("Node's http internals (node-internals.ts)", () => {
  test('_addHeaderLines fills req.headers and rawHeaders from a flat list', () => {
    const req = new IncomingMessage(null as never);
    setRawHeaders(req, ['host', 'example.test', 'cookie', 'a=1; b=2', 'x-many', '1', 'x-many', '2']);
    assert.equal(req.headers.host, 'example.test');
    assert.equal(req.headers.cookie, 'a=1; b=2');
    assert.equal(req.headers['x-many'], '1, 2');
    assert.deepEqual(req.rawHeaders.slice(0, 2), ['host', 'example.test']);
  });

  test('res.end(body): the head is rendered at _storeHeader and handed over at the first _send, unframed, with Content-Length', async () => {
    const { res, heads, pieces } = routed();
    res.setHeader('content-type', 'text/plain');
    const finished = new Promise((resolve) => res.once('finish', resolve));
    res.end('hello');
    await finished;
    assert.equal(heads.length, 1);
    assert.equal(heads[0].status, 200);
    assert.match(heads[0].text, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(heads[0].text, /\r\ncontent-type: text\/plain\r\n/i);
    assert.match(heads[0].text, /\r\nContent-Length: 5\r\n/);
    assert.match(heads[0].text, /\r\n\r\n$/);
    assert.equal(pieces.map((p) => p.data).join(''), 'hello');
    assert.equal(pieces.at(-1)!.cb, true, "end()'s last _send carries the callback that emits 'finish'");
  });

  test('res.write without a length: no chunk framing reaches the output', async () => {
    const { res, heads, pieces } = routed();
    res.write('abc');
    res.write(Buffer.from('def'));
    const finished = new Promise((resolve) => res.once('finish', resolve));
    res.end();
    await finished;
    assert.match(heads[0].text, /Transfer-Encoding: chunked/);
    assert.equal(pieces.map((p) => p.data).join(''), 'abcdef');
    assert.equal(res.chunkedEncoding, false);
  });

  test("writeHead with a flat header array, HEAD's body suppressed, 304 without body", async () => {
    const h = routed('HEAD');
    h.res.writeHead(200, ['content-type', 'text/plain', 'x-a', '1']);
    h.res.end('ignored');
    await new Promise((resolve) => h.res.once('finish', resolve));
    assert.match(h.heads[0].text, /\r\nx-a: 1\r\n/);
    assert.equal(h.pieces.map((p) => p.data).join(''), '');
  });

  test("kNeedDrain: write() returning false makes emitDrainIfNeeded emit 'drain' once", () => {
    const { res } = routed();
    assert.equal(res.write('x'), false);
    let drains = 0;
    res.on('drain', () => drains++);
    emitDrainIfNeeded(res);
    emitDrainIfNeeded(res);
    assert.equal(drains, 1);
  });
});

const head: RequestHead = { method: 'POST', target: '/p?q=1', scheme: 'http', host: 'localhost', remoteAddr: '127.0.0.1', remotePort: 1, contentLength: 4, protocol: 'HTTP/1.1' };
const src = { head, signal: new AbortController().signal };
const bodySource = {
  stream: () =>
    new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new TextEncoder().encode('body'));
        c.close();
      },
    }),
  whole: async () => Buffer.from('body'),
};

describe("undici's treatment of the lazy Request and Response (undici-globals.ts)", () => {
  installLightGlobals();

  test('the globals are the light ones, and instanceof holds both ways', () => {
    assert.equal(globalThis.Response, LightResponse);
    const light = new LightRequest(src, ['x-h', 'v'], bodySource);
    assert.ok(light instanceof Request);
    assert.ok(light instanceof NativeRequest);
    assert.ok(new NativeRequest('http://x/') instanceof Request);
    assert.ok(new Response('x') instanceof NativeResponse);
    assert.ok(new NativeResponse('x') instanceof Response);
  });

  test('undici refuses objects that are not its own: a lazy Request must be unwrapped before it reaches undici', () => {
    const light = new LightRequest(src, [], bodySource);
    assert.throws(() => new NativeRequest(light as unknown as Request), TypeError);
    const r = new Request(light as unknown as Request, { headers: { 'x-added': 'yes' } });
    assert.equal(r.url, 'http://localhost/p?q=1');
    assert.equal(r.method, 'POST');
    assert.equal(r.headers.get('x-added'), 'yes');
  });

  test('fetch(lazyRequest) sends its method, headers and body', async () => {
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => {
        body += c;
      });
      req.on('end', () => res.end(JSON.stringify({ method: req.method, h: req.headers['x-h'], body })));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    try {
      const light = new LightRequest({ ...src, head: { ...head, host: `127.0.0.1:${port}` } }, ['x-h', 'v'], bodySource);
      const res = await fetch(light as unknown as Request);
      assert.deepEqual(await res.json(), { method: 'POST', h: 'v', body: 'body' });
    } finally {
      server.close();
    }
  });

  test('a LightResponse read back by the app is undici underneath; Response.json and redirect stay light', async () => {
    const light = new Response('abc', { headers: [['x-a', '1']] });
    assert.ok((light as unknown as LightResponse).lightParts);
    assert.equal(await light.clone().text(), 'abc');
    assert.equal(light.headers.get('x-a'), '1');
    const json = Response.json({ a: 1 });
    assert.deepEqual((json as unknown as LightResponse).lightParts?.headers, ['content-type', 'application/json']);
    assert.deepEqual(await json.json(), { a: 1 });
    const redirect = Response.redirect('http://localhost/next', 301);
    assert.equal(redirect.status, 301);
    assert.equal(redirect.headers.get('location'), 'http://localhost/next');
    assert.throws(() => Response.redirect('http://localhost/', 200), RangeError);
  });
});

function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

describe("Node's socket handle (node-internals.ts: reading at accept)", () => {
  /** A Unix-socket server whose accepted sockets are not read by libuv (pauseOnConnect), and a client that has written `bytes`. */
  async function acceptedWithWaiting(bytes: Buffer, onAccepted: (socket: Socket) => void): Promise<{ client: Socket; close: () => void }> {
    const { dir, cleanup } = tempDir('gw-fd-');
    const sock = path.join(dir, 's.sock');
    const written = deferred<void>();
    const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (socket) => {
      written.promise.then(() => onAccepted(socket));
    });
    await new Promise<void>((resolve) => server.listen(sock, resolve));
    const client = net.connect(sock);
    client.on('error', () => {});
    client.write(bytes, () => written.resolve());
    return {
      client,
      close: () => {
        client.destroy();
        server.close();
        cleanup();
      },
    };
  }

  test("an accepted socket's handle has a numeric fd, and readWaiting reads what the peer sent without blocking", async () => {
    const got = deferred<{ fd: number; first: Buffer | null; again: Buffer | null }>();
    const { close } = await acceptedWithWaiting(Buffer.from('hello'), (socket) => {
      const fd = socketFd(socket);
      got.resolve({ fd, first: readWaiting(fd), again: readWaiting(fd) });
      socket.destroy();
    });
    try {
      const { fd, first, again } = await got.promise;
      assert.ok(Number.isInteger(fd) && fd >= 0, `fd is ${fd}`);
      assert.equal(first?.toString(), 'hello');
      assert.equal(again, null, 'nothing more waiting: EAGAIN is null, not a throw or a block');
    } finally {
      close();
    }
  });

  test('a socket without a handle has fd -1', () => {
    assert.equal(socketFd(new net.Socket()), -1);
  });

  test('the app server serves a uwsgi request waiting at accept within the accept, the same bytes as through libuv', async () => {
    const app: LoadedApp = { kind: 'fetch', name: 'hello', fetch: (req) => new Response(`hi ${new URL(req.url).pathname}`, { headers: { 'content-type': 'text/plain' } }) };
    const opts = parseServeOptions(['app.ts']) as ServeOptions;
    const server = new AppServer(app, opts, createLogger('silent'));
    const packet = encodeUwsgiRequest(['REQUEST_METHOD', 'GET', 'REQUEST_URI', '/x', 'PATH_INFO', '/x', 'SERVER_PROTOCOL', 'HTTP/1.1', 'HTTP_HOST', 'a.test']) as Buffer;
    const answered = deferred<string>();
    const { client, close } = await acceptedWithWaiting(packet, (socket) => {
      server.accept(socket);
      socket.resume();
    });
    const chunks: Buffer[] = [];
    client.on('data', (c) => chunks.push(c));
    client.on('close', () => answered.resolve(Buffer.concat(chunks).toString('latin1')));
    try {
      const text = await answered.promise;
      assert.match(text, /^HTTP\/1\.1 200 OK\r\n/);
      assert.ok(text.endsWith('\r\n\r\nhi /x'), text);
      assert.deepEqual(server._readAtAccept, { hits: 1, misses: 0 });
    } finally {
      close();
    }
  });
});
