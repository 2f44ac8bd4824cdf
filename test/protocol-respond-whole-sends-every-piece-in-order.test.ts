// respondWhole (head, a whole body and END_STREAM at once) sends exactly the
// body it was given, one buffer or pieces, whether both flow-control windows
// take it all at once or the rest has to wait for credit through the
// stream's Writable: same bytes, same order, END_STREAM once at the end.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { getVar } from '../protocol/vars.ts';
import type { GatewireStream } from '../protocol/session.ts';
import { connectClient, fetchOn, sha256, startSessionServer } from './helpers/protocol-session.ts';

const PIECES: Record<string, Buffer[]> = {
  // More than one frame (65,535 bytes), empty pieces between and at the end, a tiny one.
  '/mixed': [randomBytes(70_000), Buffer.alloc(0), randomBytes(10), randomBytes(150_000), Buffer.alloc(0)],
  '/one-frame-each': [randomBytes(1000), randomBytes(2000), randomBytes(3000)],
  '/all-empty': [Buffer.alloc(0), Buffer.alloc(0)],
  '/none': [],
};
const SINGLE: Record<string, Buffer> = {
  '/single-large': randomBytes(300_000),
  '/single-empty': Buffer.alloc(0),
};

function app(stream: GatewireStream): void {
  stream.resume();
  const path = getVar(stream.vars, 'PATH_INFO')!;
  if (path in SINGLE) stream.respondWhole(200, ['x-path', path], SINGLE[path]);
  else stream.respondWhole(200, ['x-path', path], PIECES[path].map((p) => new Uint8Array(p.buffer, p.byteOffset, p.byteLength)));
}

// A 16 KiB stream window makes most of every large body wait for WINDOW frames; 1 MiB takes it at once.
for (const initialStreamWindow of [16 * 1024, 1024 * 1024]) {
  test(`respondWhole sends every piece in order with a ${initialStreamWindow / 1024} KiB client stream window`, { timeout: 20_000 }, async (t) => {
    const srv = await startSessionServer(app, { unix: true });
    t.after(() => srv.close());
    const client = await connectClient(srv.connectOpts, { initialStreamWindow });
    t.after(() => client.destroy());
    const paths = [...Object.keys(PIECES), ...Object.keys(SINGLE)];
    // Concurrently, so that responses of one loop iteration share the connection window and the socket.
    const results = await Promise.all(paths.map((p) => fetchOn(client, ['REQUEST_METHOD', 'GET', 'PATH_INFO', p])));
    for (const [i, path] of paths.entries()) {
      const want = path in SINGLE ? SINGLE[path] : Buffer.concat(PIECES[path]);
      assert.equal(results[i].status, 200, path);
      assert.equal(getVar(results[i].headers, 'x-path'), path);
      assert.equal(results[i].body.length, want.length, path);
      assert.equal(sha256(results[i].body), sha256(want), path);
    }
    assert.equal(client.activeStreams, 0);
  });
}
