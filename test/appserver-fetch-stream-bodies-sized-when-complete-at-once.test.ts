// A Fetch app's ReadableStream body: when the stream hands over all of its
// chunks at once (enqueued in start(), a pull that enqueues synchronously),
// the appserver sends them as one whole response with a Content-Length, the
// chunks' bytes in order; a stream that is still producing (a later chunk
// comes from a timer) gets its head and first chunk before the rest exists,
// unsized. Over the gathering bound (64 KiB) the response streams unsized too.
// Node listeners: res.write × n + res.end in one tick goes out whole and sized.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { GatewireSession } from '../protocol/session.ts';
import { getVar } from '../protocol/vars.ts';
import { header, nativeRequest, nativeSession, requestVars, startServe, uwsgiRequest } from './helpers/appserver-clients.ts';
import { tempDir } from './helpers/net.ts';
import type { Proc } from './helpers/procs.ts';

const FETCH_APP = `
const piece = (n, c) => new Uint8Array(n).fill(c);
export default {
  fetch(request) {
    const route = new URL(request.url).pathname;
    if (route === '/at-once') {
      return new Response(new ReadableStream({ start(c) { c.enqueue(piece(20000, 0x61)); c.enqueue('text piece'); c.enqueue(piece(30000, 0x62)); c.close(); } }));
    }
    if (route === '/pull') {
      let i = 0;
      return new Response(new ReadableStream({ pull(c) { if (i < 4) c.enqueue(piece(16384, 0x63 + i++)); else c.close(); } }));
    }
    if (route === '/over-bound') {
      return new Response(new ReadableStream({ start(c) { for (let i = 0; i < 5; i++) c.enqueue(piece(32768, 0x41 + i)); c.close(); } }));
    }
    if (route === '/later') {
      return new Response(new ReadableStream({ start(c) { c.enqueue('first;'); setTimeout(() => { c.enqueue('second'); c.close(); }, 1000); } }));
    }
    if (route === '/empty') return new Response(new ReadableStream({ start(c) { c.close(); } }));
    return new Response('no such route', { status: 404 });
  },
};
`;

const NODE_APP = `
export default function (req, res) {
  if (req.url === '/writes') {
    res.setHeader('content-type', 'application/octet-stream');
    for (let i = 0; i < 3; i++) res.write(Buffer.alloc(16384, 0x70 + i));
    res.end(Buffer.alloc(16384, 0x73));
  } else {
    res.statusCode = 404;
    res.end();
  }
}
`;

const fill = (n: number, c: number) => Buffer.alloc(n, c);

describe('Fetch stream bodies complete at once go out whole and sized', { timeout: 60_000 }, () => {
  const { dir, cleanup } = tempDir('gw-gather-');
  const fetchAddr = `unix:${dir}/fetch.sock`;
  const nodeAddr = `unix:${dir}/node.sock`;
  let fetchApp: Proc;
  let nodeApp: Proc;
  let fetchSession: GatewireSession;
  let nodeSession: GatewireSession;

  before(async () => {
    writeFileSync(path.join(dir, 'fetch-app.mjs'), FETCH_APP);
    writeFileSync(path.join(dir, 'node-app.mjs'), NODE_APP);
    [fetchApp, nodeApp] = await Promise.all([
      startServe([path.join(dir, 'fetch-app.mjs'), '--listen', fetchAddr, '--workers', '0']),
      startServe([path.join(dir, 'node-app.mjs'), '--listen', nodeAddr, '--workers', '0']),
    ]);
    [fetchSession, nodeSession] = await Promise.all([nativeSession(fetchAddr), nativeSession(nodeAddr)]);
  });

  after(async () => {
    fetchSession?.destroy();
    nodeSession?.destroy();
    const codes = await Promise.all([fetchApp?.stop(10_000), nodeApp?.stop(10_000)]);
    cleanup();
    assert.deepEqual(codes, [0, 0], `${fetchApp?.output().slice(-2000)}\n${nodeApp?.output().slice(-2000)}`);
  });

  test('chunks enqueued in start(): one sized response, bytes in order (native and uwsgi)', async () => {
    const want = Buffer.concat([fill(20000, 0x61), Buffer.from('text piece'), fill(30000, 0x62)]);
    const native = await nativeRequest(fetchSession, requestVars('GET', '/at-once'));
    assert.equal(native.status, 200);
    assert.equal(getVar(native.headers, 'content-length'), String(want.length));
    assert.ok(native.body.equals(want));
    const uwsgi = await uwsgiRequest(fetchAddr, requestVars('GET', '/at-once'));
    assert.equal(uwsgi.status, 200);
    assert.equal(header(uwsgi, 'content-length'), String(want.length));
    assert.ok(uwsgi.body.equals(want));
  });

  test('a pull() that enqueues synchronously: sized', async () => {
    const want = Buffer.concat([0, 1, 2, 3].map((i) => fill(16384, 0x63 + i)));
    const r = await nativeRequest(fetchSession, requestVars('GET', '/pull'));
    assert.equal(getVar(r.headers, 'content-length'), '65536');
    assert.ok(r.body.equals(want));
  });

  test('over the gathering bound: streamed unsized, bytes in order', async () => {
    const want = Buffer.concat([0, 1, 2, 3, 4].map((i) => fill(32768, 0x41 + i)));
    const r = await nativeRequest(fetchSession, requestVars('GET', '/over-bound'));
    assert.equal(getVar(r.headers, 'content-length'), undefined);
    assert.ok(r.body.equals(want));
  });

  test('a stream still producing: head and first chunk before the rest exists, unsized', async () => {
    const stream = fetchSession.request(requestVars('GET', '/later'), { endStream: true });
    const seen: string[] = [];
    let headers: string[] = [];
    stream.on('response', (_status: number, h: string[]) => {
      headers = h;
      seen.push('response');
    });
    stream.on('data', (c: Buffer) => seen.push(`data:${c.toString()}`));
    await new Promise<void>((resolve, reject) => {
      stream.on('end', resolve);
      stream.on('error', reject);
    });
    // The head and the first chunk came as soon as they existed, the rest a second later.
    assert.deepEqual(seen.slice(0, 2), ['response', 'data:first;']);
    assert.equal(seen.slice(1).join('').replaceAll('data:', ''), 'first;second');
    assert.equal(getVar(headers, 'content-length'), undefined);
  });

  test('an empty stream: sized 0', async () => {
    const r = await nativeRequest(fetchSession, requestVars('GET', '/empty'));
    assert.equal(r.status, 200);
    assert.equal(getVar(r.headers, 'content-length'), '0');
    assert.equal(r.body.length, 0);
  });

  test('Node res.write × 3 + res.end in one tick: sized, bytes in order (native and uwsgi)', async () => {
    const want = Buffer.concat([fill(16384, 0x70), fill(16384, 0x71), fill(16384, 0x72), fill(16384, 0x73)]);
    const r = await nativeRequest(nodeSession, requestVars('GET', '/writes'));
    assert.equal(getVar(r.headers, 'content-length'), '65536');
    assert.ok(r.body.equals(want));
    const u = await uwsgiRequest(nodeAddr, requestVars('GET', '/writes'));
    assert.equal(header(u, 'content-length'), '65536');
    assert.ok(u.body.equals(want));
  });
});
