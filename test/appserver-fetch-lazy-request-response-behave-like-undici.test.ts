// The appserver hands Fetch apps a lazily built Request and makes the app's
// global Response a lazy one (appserver/fetch-request.ts, fetch-response.ts).
// Through a served app, both must behave as undici's: instanceof, new
// Request(request, init), clone(), bodies read in any way, headers read back
// and mutated, Response subclasses, Response.json(), fetch() results passed
// through, and the constructor errors the app would have seen.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { GatewireSession } from '../protocol/session.ts';
import { nativeRequest, nativeSession, requestVars, startServe, uwsgiRequest, varsHeader } from './helpers/appserver-clients.ts';
import { tempDir } from './helpers/net.ts';
import type { Proc } from './helpers/procs.ts';

// The app answers with what it observed, as JSON, so the test sees it.
const APP = `
export default {
  async fetch(request) {
    const url = new URL(request.url);
    const route = url.pathname;
    if (route === '/identity') {
      return Response.json({
        requestIsRequest: request instanceof Request,
        responseIsResponse: new Response('x') instanceof Response,
        jsonIsResponse: Response.json({}) instanceof Response,
        tag: Object.prototype.toString.call(request),
        method: request.method,
        url: request.url,
        accept: request.headers.get('accept'),
        aborted: request.signal.aborted,
        bodyIsNull: request.body === null,
        bodyUsed: request.bodyUsed,
      });
    }
    if (route === '/rewrap') {
      const copy = new Request(request, { headers: { 'x-added': 'yes' } });
      return Response.json({ method: copy.method, url: copy.url, added: copy.headers.get('x-added'), body: await copy.text() });
    }
    if (route === '/clone') {
      const c = request.clone();
      return Response.json({ first: await c.text(), second: await request.text(), used: request.bodyUsed });
    }
    if (route === '/stream-body') {
      let n = 0;
      for await (const chunk of request.body) n += chunk.byteLength;
      return new Response(String(n));
    }
    if (route === '/json-body') return Response.json({ got: await request.json() });
    if (route === '/mutate') {
      const res = new Response('mutated', { status: 202, headers: { 'x-one': '1' } });
      res.headers.set('x-two', '2');
      return res;
    }
    if (route === '/subclass') {
      class Teapot extends Response { constructor() { super('short and stout', { status: 418, statusText: 'Teapot', headers: { 'x-kind': 'teapot' } }); } }
      const t = new Teapot();
      if (!(t instanceof Teapot) || !(t instanceof Response) || new Response('') instanceof Teapot) throw new Error('instanceof broken');
      return t;
    }
    if (route === '/headers-object') {
      const h = new Headers({ 'x-a': 'a' });
      h.append('set-cookie', 'c1=1');
      h.append('set-cookie', 'c2=2');
      return new Response(new Uint8Array([104, 105]), { headers: h });
    }
    if (route === '/bytes') return new Response(new Uint8Array([1, 2, 3, 4]), { headers: { 'Content-Type': 'application/octet-stream' } });
    if (route === '/empty') return new Response(null, { status: 204, headers: { 'x-empty': '1' } });
    if (route === '/nobody') return new Response();
    if (route === '/read-back') {
      const res = new Response('read back', { headers: { 'x-r': 'r' } });
      const text = await res.clone().text();
      return new Response(text + ' ' + res.headers.get('x-r') + ' ' + res.status);
    }
    if (route === '/bad-status') return new Response('x', { status: 204 });
    if (route === '/upstream') return fetch(url.searchParams.get('to'));
    return new Response('Not Found', { status: 404 });
  },
};
`;

describe('lazy Request and Response seen by a Fetch app', { timeout: 60_000 }, () => {
  const { dir, cleanup } = tempDir('gw-lazy-');
  let app: Proc;
  let session: GatewireSession;
  let address: string;
  let upstream: http.Server;
  let upstreamPort = 0;

  before(async () => {
    const file = path.join(dir, 'app.mjs');
    writeFileSync(file, APP);
    address = `unix:${path.join(dir, 'app.sock')}`;
    upstream = http.createServer((_req, res) => {
      res.setHeader('x-upstream', 'yes');
      res.end('from upstream');
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
    upstreamPort = (upstream.address() as { port: number }).port;
    app = await startServe([file, '--listen', address, '--workers', '1', '--log-level', 'warn']);
    session = await nativeSession(address);
  });

  after(async () => {
    session?.destroy();
    await app?.stop(10_000);
    upstream?.close();
    cleanup();
  });

  const get = async (p: string, headers: Array<[string, string]> = []) => nativeRequest(session, requestVars('GET', p, headers));
  const post = async (p: string, body: Buffer, headers: Array<[string, string]> = []) => nativeRequest(session, requestVars('POST', p, headers, String(body.length)), body);

  test('the request is a Request, with method, URL, headers and an unaborted signal; Response and Response.json() are Responses', async () => {
    const r = await get('/identity?q=1', [['accept', 'text/html']]);
    assert.equal(r.status, 200);
    assert.deepEqual(JSON.parse(r.body.toString()), {
      requestIsRequest: true,
      responseIsResponse: true,
      jsonIsResponse: true,
      tag: '[object Request]',
      method: 'GET',
      url: 'http://localhost/identity?q=1',
      accept: 'text/html',
      aborted: false,
      bodyIsNull: true,
      bodyUsed: false,
    });
  });

  test('new Request(request, init) copies method, URL and body and takes the new headers', async () => {
    const r = await post('/rewrap', Buffer.from('payload'));
    assert.deepEqual(JSON.parse(r.body.toString()), { method: 'POST', url: 'http://localhost/rewrap', added: 'yes', body: 'payload' });
  });

  test('clone() and text() both read the whole body', async () => {
    const r = await post('/clone', Buffer.from('twice'));
    assert.deepEqual(JSON.parse(r.body.toString()), { first: 'twice', second: 'twice', used: true });
  });

  test('request.body streams the whole upload; request.json() parses it', async () => {
    const big = Buffer.alloc(700_000, 0x62);
    assert.equal((await post('/stream-body', big)).body.toString(), String(big.length));
    const j = await post('/json-body', Buffer.from('{"a":[1,2]}'), [['content-type', 'application/json']]);
    assert.deepEqual(JSON.parse(j.body.toString()), { got: { a: [1, 2] } });
  });

  test('headers set on a Response after construction are sent', async () => {
    const r = await get('/mutate');
    assert.equal(r.status, 202);
    assert.equal(varsHeader(r.headers, 'x-one'), '1');
    assert.equal(varsHeader(r.headers, 'x-two'), '2');
    assert.equal(r.body.toString(), 'mutated');
  });

  test('a Response subclass keeps its status, headers, body and instanceof', async () => {
    const r = await get('/subclass');
    assert.equal(r.status, 418);
    assert.equal(varsHeader(r.headers, 'x-kind'), 'teapot');
    assert.equal(r.body.toString(), 'short and stout');
  });

  test('a Headers object with two Set-Cookie values, and byte bodies, get through with their Content-Length', async () => {
    const r = await get('/headers-object');
    assert.deepEqual(
      r.headers.filter((_, i) => i % 2 === 0 && r.headers[i] === 'set-cookie').length,
      2,
    );
    assert.equal(varsHeader(r.headers, 'content-length'), '2');
    assert.equal(r.body.toString(), 'hi');
    const b = await get('/bytes');
    assert.equal(varsHeader(b.headers, 'content-type'), 'application/octet-stream');
    assert.equal(varsHeader(b.headers, 'content-length'), '4');
    assert.deepEqual([...b.body], [1, 2, 3, 4]);
  });

  test('a string body gets undici\'s default content type; null bodies are empty (204 without, 200 with Content-Length 0)', async () => {
    const t = await get('/read-back');
    assert.equal(varsHeader(t.headers, 'content-type'), 'text/plain;charset=UTF-8');
    assert.equal(t.body.toString(), 'read back r 200');
    const e = await get('/empty');
    assert.equal(e.status, 204);
    assert.equal(varsHeader(e.headers, 'x-empty'), '1');
    assert.equal(e.body.length, 0);
    const n = await get('/nobody');
    assert.equal(n.status, 200);
    assert.equal(varsHeader(n.headers, 'content-length'), '0');
  });

  test('what undici refuses still throws in the app (a 204 with a body is a 500)', async () => {
    const r = await get('/bad-status');
    assert.equal(r.status, 500);
    // The log line is written by the worker's logger, maybe after the 500 has reached us.
    await app.waitFor(/Invalid response status code 204/, 10_000);
  });

  test('a fetch() Response returned as is reaches the client', async () => {
    const r = await get(`/upstream?to=${encodeURIComponent(`http://127.0.0.1:${upstreamPort}/`)}`);
    assert.equal(r.status, 200);
    assert.equal(varsHeader(r.headers, 'x-upstream'), 'yes');
    assert.equal(r.body.toString(), 'from upstream');
  });

  test('over uwsgi classic too: a lazy Response goes out in one piece with its Content-Length', async () => {
    const r = await uwsgiRequest(address, requestVars('GET', '/bytes'));
    assert.equal(r.status, 200);
    assert.deepEqual([...r.body], [1, 2, 3, 4]);
    assert.ok(r.rawHeaders.includes('content-length'));
  });
});
