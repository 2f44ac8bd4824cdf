// A large request body read whole for text() (and json(), formData()) is freed
// as soon as it is decoded — its ArrayBuffer detached, so it never counts as
// V8 external memory until a collection — while a body the app is given as
// bytes (arrayBuffer(), bytes(), blob()) is left alone, and small bodies (which
// may be slices of Node's shared Buffer pool) are never touched. Then through
// a running appserver: 1 MiB bodies read every way come out exact.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { bodyBuffer, freeDecoded } from '../appserver/fetch-adapter.ts';
import { nativeRequest, nativeSession, requestVars, startServe } from './helpers/appserver-clients.ts';
import { tempDir } from './helpers/net.ts';

test('a large body buffer of its own is detached once decoded; small ones and others are not', () => {
  const large = bodyBuffer(1024 * 1024);
  large.fill(0x61);
  const body = large.subarray(0, 1000 * 1000); // a body shorter than announced is a view of the same buffer
  assert.equal(body.toString('latin1', 0, 3), 'aaa');
  freeDecoded(body);
  // ArrayBuffer.prototype.transfer came with Node 21: on Node 20 the body waits for a collection as before.
  const detachable = typeof (ArrayBuffer.prototype as { transfer?: unknown }).transfer === 'function';
  assert.equal(large.buffer.byteLength, detachable ? 0 : 1024 * 1024, 'the ArrayBuffer is detached');
  assert.equal(large.length, detachable ? 0 : 1024 * 1024);
  freeDecoded(body); // twice: nothing happens

  const small = bodyBuffer(100); // may be a slice of Node's pool, shared with other buffers
  small.fill(0x62);
  freeDecoded(small);
  assert.equal(small.length, 100);
  assert.equal(small[99], 0x62);

  const foreign = Buffer.alloc(1024 * 1024, 0x63); // not a body buffer: never detached
  freeDecoded(foreign);
  assert.equal(foreign.length, 1024 * 1024);
});

test('1 MiB bodies through text(), json(), formData() and arrayBuffer() arrive exact', { timeout: 60_000 }, async () => {
  const { dir, cleanup } = tempDir('gw-decoded-');
  writeFileSync(
    path.join(dir, 'app.mjs'),
    `import { createHash } from 'node:crypto';
const sha = (b) => createHash('sha256').update(b).digest('hex');
export default {
  async fetch(request) {
    const how = new URL(request.url).pathname;
    if (how === '/text') { const t = await request.text(); return Response.json({ length: t.length, sha: sha(t) }); }
    if (how === '/json') { const j = await request.json(); return Response.json({ length: j.s.length, sha: sha(j.s) }); }
    if (how === '/form') { const f = await request.formData(); return Response.json({ length: f.get('s').length, sha: sha(f.get('s')) }); }
    const b = Buffer.from(await request.arrayBuffer());
    return Response.json({ length: b.length, sha: sha(b) });
  },
};`,
  );
  const address = `unix:${dir}/app.sock`;
  const app = await startServe([path.join(dir, 'app.mjs'), '--listen', address, '--workers', '0']);
  const session = await nativeSession(address);
  const sha = (b: string | Buffer) => createHash('sha256').update(b).digest('hex');
  try {
    // Non-ASCII and a BOM up front (text() drops it), so a decode from the wrong bytes would show.
    const s = `${'é€x'.repeat(200_000)}tail`;
    const cases: Array<[string, Buffer, string]> = [
      ['/text', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(s)]), s],
      ['/json', Buffer.from(JSON.stringify({ s })), s],
      ['/form', Buffer.from(`s=${encodeURIComponent(s)}`), s],
    ];
    for (let round = 0; round < 3; round++) {
      for (const [route, body, want] of cases) {
        const vars = requestVars('POST', route, [], String(body.length));
        if (route === '/form') vars[vars.indexOf('CONTENT_TYPE') + 1] = 'application/x-www-form-urlencoded';
        const r = await nativeRequest(session, vars, body);
        assert.equal(r.status, 200, r.body.toString());
        assert.deepEqual(JSON.parse(r.body.toString()), { length: want.length, sha: sha(want) }, route);
      }
      const bytes = Buffer.alloc(1024 * 1024 + 7, round + 1);
      const r = await nativeRequest(session, requestVars('POST', '/bytes', [], String(bytes.length)), bytes);
      assert.deepEqual(JSON.parse(r.body.toString()), { length: bytes.length, sha: sha(bytes) });
    }
  } finally {
    session.destroy();
    const code = await app.stop(10_000);
    cleanup();
    assert.equal(code, 0, app.output().slice(-2000));
  }
});
