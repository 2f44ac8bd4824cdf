// A real browser and an HTTP/2 client: headless Chromium loads a page through
// the proxy whose script opens a WebSocket through the same proxy, exchanges
// text and binary messages and a close code, and reports back; Node's http2
// client opens a WebSocket with extended CONNECT (RFC 8441) on the proxy's h2
// listener and talks WebSocket frames over its stream.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http2 from 'node:http2';
import { test } from 'node:test';
import { startServe } from './helpers/appserver-clients.ts';
import { openInChromium } from './helpers/chromium.ts';
import { tempDir } from './helpers/net.ts';
import { startProxy } from './helpers/proxy-harness.ts';

test('headless Chromium: a page served through the proxy talks WebSocket through the same proxy', { timeout: 90_000 }, async (t) => {
  const { dir, cleanup } = tempDir('gw-wsb-');
  t.after(cleanup);
  const serve = await startServe(['test/apps/ws-fetch.ts', '--listen', `unix:${dir}/a.sock`, '--workers', '0']);
  t.after(() => serve.stop(5000));
  const proxy = await startProxy(t, { upstreams: { app: { servers: [`unix:${dir}/a.sock`] } } }, { admin: false });
  const browser = openInChromium(`${proxy.url}/page`);
  t.after(() => browser.close());
  let report: Record<string, unknown> | null = null;
  const deadline = Date.now() + 60_000;
  while (report === null) {
    assert.ok(Date.now() < deadline, `no report from the browser:\n${browser.proc.output().slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 250));
    report = (await (await fetch(`${proxy.url}/report`)).json()) as Record<string, unknown> | null;
  }
  assert.equal(report.error, undefined, JSON.stringify(report));
  assert.deepEqual(report.steps, ['hello from the browser', 'binary ok']);
  assert.equal(report.protocol, 'chat.v2');
  assert.match(String(report.extensions), /permessage-deflate/);
  assert.deepEqual(report.close, { code: 4321, reason: 'done' });
  assert.equal(report.cookie, 'ws=1');
});

/** A masked client frame (RFC 6455 §5.2), payload < 64 KiB. */
function clientFrame(opcode: number, payload: Buffer): Buffer {
  const mask = randomBytes(4);
  const head = payload.length < 126 ? Buffer.from([0x80 | opcode, 0x80 | payload.length]) : Buffer.from([0x80 | opcode, 0x80 | 126, payload.length >> 8, payload.length & 0xff]);
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i] ^= mask[i & 3];
  return Buffer.concat([head, mask, body]);
}

/** Unmasked server frames out of a byte stream. */
function* serverFrames(buf: Buffer): Generator<{ opcode: number; payload: Buffer; size: number }> {
  let off = 0;
  while (buf.length - off >= 2) {
    const opcode = buf[off] & 0x0f;
    let len = buf[off + 1] & 0x7f;
    let head = 2;
    if (len === 126) {
      if (buf.length - off < 4) return;
      len = buf.readUInt16BE(off + 2);
      head = 4;
    }
    if (buf.length - off < head + len) return;
    yield { opcode, payload: buf.subarray(off + head, off + head + len), size: head + len };
    off += head + len;
  }
}

test('HTTP/2 extended CONNECT (RFC 8441) on the h2 listener reaches the same app as a WebSocket', { timeout: 60_000 }, async (t) => {
  const { dir, cleanup } = tempDir('gw-wsh-');
  t.after(cleanup);
  const serve = await startServe(['test/apps/ws-node-server.ts', '--listen', `unix:${dir}/a.sock`, '--workers', '0']);
  t.after(() => serve.stop(5000));
  const proxy = await startProxy(t, { listen: { http2: true }, upstreams: { app: { servers: [`unix:${dir}/a.sock`] } } }, { admin: false });
  const client = http2.connect(proxy.url);
  t.after(() => client.close());
  const settings = await new Promise<http2.Settings>((resolve) => client.once('remoteSettings', resolve));
  assert.equal(settings.enableConnectProtocol, true, 'the proxy announces SETTINGS_ENABLE_CONNECT_PROTOCOL');
  const stream = client.request({
    ':method': 'CONNECT',
    ':protocol': 'websocket',
    ':scheme': 'http',
    ':path': '/ws',
    ':authority': `127.0.0.1:${proxy.port}`,
    'sec-websocket-version': '13',
    'sec-websocket-protocol': 'chat.v2',
    origin: 'http://h2.test',
  });
  const headers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
    stream.once('response', resolve);
    stream.once('error', reject);
  });
  assert.equal(headers[':status'], 200);
  assert.equal(headers['sec-websocket-protocol'], 'chat.v2');
  assert.equal(headers['sec-websocket-accept'], undefined);
  let received = Buffer.alloc(0);
  const frames: Array<{ opcode: number; payload: Buffer }> = [];
  stream.on('data', (c: Buffer) => {
    received = Buffer.concat([received, c]);
    let used = 0;
    for (const f of serverFrames(received)) {
      frames.push(f);
      used += f.size;
    }
    received = received.subarray(used);
  });
  const waitFrames = async (n: number) => {
    const deadline = Date.now() + 10_000;
    while (frames.length < n) {
      assert.ok(Date.now() < deadline, `only ${frames.length} frames`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  stream.write(clientFrame(0x1, Buffer.from('hello over h2')));
  await waitFrames(1);
  assert.deepEqual({ opcode: frames[0].opcode, text: frames[0].payload.toString() }, { opcode: 1, text: 'hello over h2' });
  const bin = randomBytes(40_000);
  stream.write(clientFrame(0x2, bin));
  await waitFrames(2);
  assert.equal(frames[1].opcode, 2);
  assert.ok(frames[1].payload.equals(bin));
  // Close with 4003: the app echoes the close (ws does), then the stream ends.
  stream.write(clientFrame(0x8, Buffer.from([0x0f, 0xa3, ...Buffer.from('bye')])));
  await waitFrames(3);
  assert.equal(frames[2].opcode, 8);
  assert.equal(frames[2].payload.readUInt16BE(0), 4003);
  stream.end();
  await new Promise((resolve) => stream.once('close', resolve));
  await proxy.proc.waitFor(/"tunnel":"h2-websocket"/, 5000);
});
