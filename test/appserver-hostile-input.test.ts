// Hostile or broken peers end only their own connection: garbage bytes,
// malformed vars, bytes past CONTENT_LENGTH, unknown frames, window overflow,
// too many streams. Meanwhile another connection keeps being served and each
// bad connection leaves a log line. Plus who may connect at all: --allow-from,
// and the Unix socket file lifecycle.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import type net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { ErrorCode, Flag, FrameType } from '../protocol/constants.ts';
import { encodeFrame, encodeRequestFrame, encodeSettings, encodeWindow, FrameDecoder } from '../protocol/frame.ts';
import type { GatewireSession } from '../protocol/session.ts';
import { connectTo, nativeRequest, nativeSession, requestVars, startServe, uwsgiRequest } from './helpers/appserver-clients.ts';
import { freePort, tempDir } from './helpers/net.ts';
import { type Proc, startGatewire } from './helpers/procs.ts';

interface Frame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

/** A raw socket that records every frame the server sends and when it closes. */
function rawNative(addr: string) {
  const sock = connectTo(addr);
  const frames: Frame[] = [];
  const decoder = new FrameDecoder({
    onFrame(type, flags, streamId, payload) {
      frames.push({ type, flags, streamId, payload: Buffer.from(payload) });
    },
  });
  sock.on('data', (d) => decoder.push(d));
  sock.on('error', () => {});
  const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()));
  return { sock, frames, closed };
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms))]);
}

const SETTINGS = encodeSettings({ maxConcurrentStreams: 100, initialStreamWindow: 65535 * 4, initialConnectionWindow: 1 << 20 });

describe('hostile input at the appserver socket', { timeout: 120_000 }, () => {
  const { dir, cleanup } = tempDir('gw-hos-');
  const addr = `unix:${dir}/app.sock`;
  let app: Proc;
  let good: GatewireSession;

  before(async () => {
    app = await startServe(['examples/hello.ts', '--listen', addr, '--workers', '1', '--max-streams', '4', '--timeout', '30']);
    good = await nativeSession(addr);
  });

  after(async () => {
    good?.destroy();
    const code = await app?.stop(10_000);
    cleanup();
    assert.equal(code, 0, app?.output().slice(-3000));
  });

  async function stillServing(): Promise<void> {
    const r = await nativeRequest(good, requestVars('GET', '/healthz'));
    assert.equal(r.status, 200);
    const u = await uwsgiRequest(addr, requestVars('GET', '/healthz'));
    assert.equal(u.status, 200);
  }

  test('garbage bytes: the connection is closed, others are served', async () => {
    const { sock, closed } = rawNative(addr);
    // uwsgi header announcing 12 bytes of vars whose first key claims 0x4141 bytes.
    sock.write(Buffer.from([0, 12, 0, 0, 0x41, 0x41, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]));
    await withTimeout(closed, 10_000, 'close after garbage');
    await stillServing();
  });

  test('malformed vars in a native REQUEST: GOAWAY and close of that connection only', async () => {
    const { sock, frames, closed } = rawNative(addr);
    // vars block: key length 200 but only 3 bytes follow.
    const bad = Buffer.from([200, 0, 65, 66, 67]);
    sock.write(Buffer.concat([SETTINGS, encodeFrame(FrameType.REQUEST, Flag.END_STREAM, 1, bad)]));
    await withTimeout(closed, 10_000, 'close after malformed vars');
    assert.ok(frames.some((f) => f.type === FrameType.GOAWAY && f.payload.readUInt32LE(4) === ErrorCode.PROTOCOL_ERROR));
    await stillServing();
  });

  test('bytes past CONTENT_LENGTH on a uwsgi connection close it', async () => {
    const sock = connectTo(addr) as net.Socket;
    sock.on('error', () => {});
    const closed = new Promise<void>((r) => sock.once('close', () => r()));
    const { encodeUwsgiRequest } = await import('../protocol/uwsgi.ts');
    const packet = encodeUwsgiRequest(requestVars('POST', '/slow?ms=3000', [], '3')) as Buffer;
    sock.write(Buffer.concat([packet, Buffer.from('abc'), Buffer.from('smuggled second request')]));
    await withTimeout(closed, 10_000, 'close after excess bytes');
    await stillServing();
  });

  test('an unknown frame type and a WINDOW overflow are connection errors', async () => {
    const a = rawNative(addr);
    a.sock.write(Buffer.concat([SETTINGS, encodeFrame(0x7f, 0, 0)]));
    await withTimeout(a.closed, 10_000, 'close after unknown frame');
    const b = rawNative(addr);
    b.sock.write(Buffer.concat([SETTINGS, encodeWindow(0, 0x7fffffff), encodeWindow(0, 0x7fffffff)]));
    await withTimeout(b.closed, 10_000, 'close after window overflow');
    assert.ok(b.frames.some((f) => f.type === FrameType.GOAWAY && f.payload.readUInt32LE(4) === ErrorCode.FLOW_CONTROL_ERROR));
    await stillServing();
  });

  test('streams past --max-streams are refused one by one; the connection and the others live on', async () => {
    const { sock, frames } = rawNative(addr);
    const reqs: Buffer[] = [SETTINGS];
    for (let id = 1; id <= 6; id++) reqs.push(encodeRequestFrame(id, requestVars('GET', '/slow?ms=300'), true) as Buffer);
    sock.write(Buffer.concat(reqs));
    const deadline = Date.now() + 15_000;
    while (frames.filter((f) => f.type === FrameType.DATA && f.flags & Flag.END_STREAM).length < 4 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const refused = frames.filter((f) => f.type === FrameType.RESET && f.payload.readUInt32LE(0) === ErrorCode.REFUSED_STREAM).map((f) => f.streamId);
    assert.deepEqual(refused.sort(), [5, 6]);
    const answered = frames.filter((f) => f.type === FrameType.RESPONSE).map((f) => f.streamId);
    assert.deepEqual(answered.sort(), [1, 2, 3, 4]);
    assert.equal(sock.destroyed, false);
    sock.destroy();
    await stillServing();
  });

  test('every bad connection left a log line', () => {
    const lines = app.output().match(/connection closed: protocol error/g) ?? [];
    assert.ok(lines.length >= 4, `only ${lines.length} protocol error log lines`);
  });
});

describe('who may connect, and the socket file', { timeout: 60_000 }, () => {
  test('--allow-from refuses TCP peers outside the list (logged, closed) and admits the others', async (t) => {
    const denyPort = await freePort();
    const allowPort = await freePort();
    const deny = await startServe(['examples/hello.ts', '--listen', `127.0.0.1:${denyPort}`, '--workers', '0', '--allow-from', '10.0.0.0/8,192.168.0.0/16']);
    t.after(() => deny.stop());
    const allow = await startServe(['examples/hello.ts', '--listen', `127.0.0.1:${allowPort}`, '--workers', '0'], { GATEWIRE_ALLOW_FROM: '127.0.0.0/8' });
    t.after(() => allow.stop());
    await assert.rejects(uwsgiRequest(`127.0.0.1:${denyPort}`, requestVars('GET', '/')));
    await deny.waitFor(/refused by --allow-from/, 5000);
    const r = await uwsgiRequest(`127.0.0.1:${allowPort}`, requestVars('GET', '/'));
    assert.equal(r.status, 200);
  });

  test('a stale Unix socket file is replaced at start; a live one is not stolen', async (t) => {
    const { dir, cleanup } = tempDir('gw-sock-');
    t.after(cleanup);
    const path = `${dir}/stale.sock`;
    // A socket file whose server died without removing it.
    execFileSync('python3', ['-c', `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(path)})`]);
    assert.ok(existsSync(path));
    const app = await startServe(['examples/hello.ts', '--listen', `unix:${path}`, '--workers', '1']);
    t.after(() => app.stop());
    assert.equal((await uwsgiRequest(`unix:${path}`, requestVars('GET', '/'))).status, 200);
    const second = startGatewire(['serve', 'examples/hello.ts', '--listen', `unix:${path}`, '--workers', '0']);
    assert.equal(await second.exited, 1);
    assert.match(second.output(), /another server is accepting connections/);
    assert.equal((await uwsgiRequest(`unix:${path}`, requestVars('GET', '/'))).status, 200);
    assert.equal(await app.stop(), 0);
    assert.equal(existsSync(path), false);
  });

  test('an app module that exports neither interface fails at start with a clear error', async () => {
    const { dir, cleanup } = tempDir('gw-bad-');
    try {
      const file = `${dir}/bad.mjs`;
      (await import('node:fs')).writeFileSync(file, 'export const answer = 42;\n');
      const p = startGatewire(['serve', file, '--listen', `unix:${dir}/x.sock`, '--workers', '1']);
      assert.equal(await p.exited, 1);
      assert.match(p.output(), /no default export \(found exports: \[answer\]\)/);
    } finally {
      cleanup();
    }
  });
});
