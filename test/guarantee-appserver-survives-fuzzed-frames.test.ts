// Fuzzed and hostile frames sent to the appserver socket from raw
// connections: random bytes, random frames after a valid preface, truncated
// frames, lengths that lie, streams opened past the limit, WINDOW overflow,
// DATA after END_STREAM, DATA past the window, broken uwsgi packets. Each is
// answered on its own connection only (a stream RESET, or GOAWAY and close) —
// a native session and uwsgi clients opened alongside keep being served, the
// process never dies, and its memory stays bounded over rounds of abuse.
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { ErrorCode, Flag, FrameType } from '../protocol/constants.ts';
import { encodeFrame, encodeRequestFrame, encodeSettings, encodeWindow } from '../protocol/frame.ts';
import { encodeUwsgiRequest } from '../protocol/uwsgi.ts';
import { nativeRequest, nativeSession, requestVars, uwsgiRequest } from './helpers/appserver-clients.ts';
import { procMemory, startApp } from './helpers/guarantee-stack.ts';

const MAX_STREAMS = 8;
const PREFACE = encodeSettings({ maxConcurrentStreams: 100, initialStreamWindow: 256 * 1024, initialConnectionWindow: 1024 * 1024 });

/** A small deterministic PRNG (mulberry32): a failing seed can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function bytes(rand: () => number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (rand() * 256) | 0;
  return b;
}

function request(id: number, endStream: boolean, path = '/hello'): Buffer {
  const f = encodeRequestFrame(id, requestVars('POST', path, [], ''), endStream);
  if (!(f instanceof Buffer)) throw f;
  return f;
}

interface Frame {
  type: number;
  flags: number;
  stream: number;
  payload: Buffer;
}

/** The server's answer, cut into frames (independent of the session code under test). */
function frames(data: Buffer): Frame[] {
  const out: Frame[] = [];
  let off = 0;
  while (off + 8 <= data.length) {
    const length = data.readUInt16LE(off + 1);
    if (off + 8 + length > data.length) break;
    out.push({ type: data[off], flags: data[off + 3], stream: data.readUInt32LE(off + 4), payload: data.subarray(off + 8, off + 8 + length) });
    off += 8 + length;
  }
  return out;
}

interface Abuse {
  name: string;
  /** What to write; the connection is half-closed (FIN) after it unless keepOpen. */
  bytes: Buffer;
  keepOpen?: boolean;
  /** Checks the server's answer; returns a problem or null. */
  expect: 'closed' | ((answer: Frame[], closed: boolean) => string | null);
}

function goawayWith(code: number) {
  return (answer: Frame[], closed: boolean): string | null => {
    const g = answer.find((f) => f.type === FrameType.GOAWAY);
    if (!g) return `no GOAWAY (frames: ${answer.map((f) => f.type)})`;
    if (g.payload.readUInt32LE(4) !== code) return `GOAWAY code ${g.payload.readUInt32LE(4)}, expected ${code}`;
    return closed ? null : 'GOAWAY but the connection stayed open';
  };
}

function resetWith(code: number, stream: number) {
  return (answer: Frame[]): string | null => {
    const r = answer.find((f) => f.type === FrameType.RESET && f.stream === stream);
    if (r && r.payload.readUInt32LE(0) === code) return null;
    const g = answer.find((f) => f.type === FrameType.GOAWAY);
    // a connection error is also an acceptable, stricter answer
    if (g) return null;
    return `no RESET(${code}) for stream ${stream} (frames: ${answer.map((f) => `${f.type}@${f.stream}`)})`;
  };
}

function abuses(rand: () => number): Abuse[] {
  const list: Abuse[] = [];
  // the same named shapes every round
  const tooMany: Buffer[] = [PREFACE];
  for (let id = 1; id <= MAX_STREAMS * 4; id++) tooMany.push(request(id, false, '/slow?ms=3000'));
  list.push({
    name: 'streams opened past the limit',
    bytes: Buffer.concat(tooMany),
    keepOpen: true,
    expect: (answer) => {
      const refused = answer.filter((f) => f.type === FrameType.RESET && f.payload.readUInt32LE(0) === ErrorCode.REFUSED_STREAM).length;
      return refused >= MAX_STREAMS * 3 ? null : `${refused} streams refused of ${MAX_STREAMS * 4} opened with a limit of ${MAX_STREAMS}`;
    },
  });
  list.push({
    name: 'WINDOW overflow on the connection',
    bytes: Buffer.concat([PREFACE, encodeWindow(0, 0x7fffffff), encodeWindow(0, 0x7fffffff)]),
    expect: goawayWith(ErrorCode.FLOW_CONTROL_ERROR),
  });
  list.push({
    name: 'WINDOW overflow on a stream',
    bytes: Buffer.concat([PREFACE, request(1, false, '/slow?ms=2000'), encodeWindow(1, 0x7fffffff), encodeWindow(1, 0x7fffffff)]),
    keepOpen: true,
    expect: resetWith(ErrorCode.FLOW_CONTROL_ERROR, 1),
  });
  list.push({
    name: 'DATA after END_STREAM',
    bytes: Buffer.concat([PREFACE, request(1, true, '/slow?ms=2000'), encodeFrame(FrameType.DATA, 0, 1, Buffer.from('late'))]),
    keepOpen: true,
    expect: resetWith(ErrorCode.STREAM_CLOSED, 1),
  });
  const flood: Buffer[] = [PREFACE, request(1, false, '/slow?ms=3000')];
  for (let i = 0; i < 40; i++) flood.push(encodeFrame(FrameType.DATA, 0, 1, Buffer.alloc(0xffff)));
  list.push({ name: 'DATA past the flow-control window', bytes: Buffer.concat(flood), expect: goawayWith(ErrorCode.FLOW_CONTROL_ERROR) });
  list.push({ name: 'a WINDOW increment of 0', bytes: Buffer.concat([PREFACE, encodeWindow(0, 0)]), expect: goawayWith(ErrorCode.PROTOCOL_ERROR) });
  list.push({
    name: 'stream ids going backwards',
    bytes: Buffer.concat([PREFACE, request(5, true), request(3, true)]),
    expect: goawayWith(ErrorCode.PROTOCOL_ERROR),
  });
  list.push({ name: 'DATA on a stream never opened', bytes: Buffer.concat([PREFACE, encodeFrame(FrameType.DATA, 0, 99, Buffer.from('x'))]), expect: goawayWith(ErrorCode.PROTOCOL_ERROR) });
  list.push({ name: 'an unknown frame type', bytes: Buffer.concat([PREFACE, encodeFrame(0x7e, 0, 0, Buffer.from('??'))]), expect: 'closed' });
  list.push({ name: 'a RESPONSE from the client', bytes: Buffer.concat([PREFACE, encodeFrame(FrameType.RESPONSE, Flag.END_STREAM, 1, Buffer.from([200, 0]))]), expect: 'closed' });
  // a REQUEST whose vars block lies about its inner lengths
  const lying = Buffer.alloc(64);
  lying.writeUInt16LE(60000, 0);
  list.push({ name: 'vars with lengths past the frame', bytes: Buffer.concat([PREFACE, encodeFrame(FrameType.REQUEST, Flag.END_STREAM, 1, lying)]), expect: 'closed' });
  // a frame header announcing 65535 bytes that never come
  const truncatedHeader = Buffer.alloc(8);
  truncatedHeader[0] = FrameType.REQUEST;
  truncatedHeader.writeUInt16LE(0xffff, 1);
  truncatedHeader.writeUInt32LE(1, 4);
  list.push({ name: 'a truncated frame (length announced, bytes missing)', bytes: Buffer.concat([PREFACE, truncatedHeader, Buffer.alloc(100)]), expect: 'closed' });
  list.push({ name: 'half a frame header', bytes: Buffer.concat([PREFACE, Buffer.from([FrameType.PING, 8, 0])]), expect: 'closed' });
  list.push({ name: 'half a preface', bytes: PREFACE.subarray(0, 10), expect: 'closed' });
  // uwsgi classic: a packet announcing more vars than sent, a body longer than CONTENT_LENGTH
  const uwsgiHead = Buffer.from([0, 0xff, 0xff, 0]);
  list.push({ name: 'uwsgi: vars size announced, bytes missing', bytes: Buffer.concat([uwsgiHead, Buffer.alloc(200)]), expect: 'closed' });
  const pkt = encodeUwsgiRequest(requestVars('POST', '/upload', [], '4'));
  if (!(pkt instanceof Buffer)) throw pkt;
  list.push({ name: 'uwsgi: body longer than CONTENT_LENGTH', bytes: Buffer.concat([pkt, Buffer.from('abcdEXTRA-BYTES-NOBODY-ASKED-FOR')]), expect: 'closed' });
  // random: bytes from the first byte, and random frames after a valid preface
  for (let i = 0; i < 30; i++) list.push({ name: `random bytes #${i}`, bytes: bytes(rand, 1 + ((rand() * 3000) | 0)), expect: 'closed' });
  for (let i = 0; i < 30; i++) {
    const parts: Buffer[] = [PREFACE];
    const n = 1 + ((rand() * 10) | 0);
    for (let j = 0; j < n; j++) {
      const payload = bytes(rand, (rand() * 200) | 0);
      parts.push(encodeFrame(1 + ((rand() * 9) | 0), (rand() * 4) | 0, (rand() * 4) | 0, payload));
    }
    if (rand() < 0.5) parts.push(bytes(rand, 1 + ((rand() * 20) | 0)));
    list.push({ name: `random frames #${i}`, bytes: Buffer.concat(parts), expect: 'closed' });
  }
  return list;
}

/** Sends one abuse on its own connection; resolves with what came back and whether the server closed. */
function abuse(address: string, a: Abuse): Promise<{ answer: Buffer; closed: boolean }> {
  return new Promise((resolve) => {
    const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
    const sock = net.connect(port, host);
    const chunks: Buffer[] = [];
    let done = false;
    const finish = (closed: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ answer: Buffer.concat(chunks), closed });
    };
    // the appserver cuts a silent, undetected connection after 10 s: allow that, and a little more
    const timer = setTimeout(() => finish(false), a.keepOpen ? 3000 : 14000);
    sock.on('data', (d) => chunks.push(d));
    sock.on('error', () => finish(true));
    sock.on('close', () => finish(true));
    sock.once('connect', () => {
      sock.write(a.bytes);
      if (!a.keepOpen) sock.end();
    });
  });
}

test('fuzzed and hostile frames close only their own connection; bystanders are served; the appserver lives and its memory stays bounded', { timeout: 120000 }, async (t) => {
  const app = await startApp(t, 'A', { args: ['--max-streams', String(MAX_STREAMS), '--timeout', '10'] });
  const seed = Number(process.env.GW_FUZZ_SEED ?? Date.now() % 1_000_000);
  t.diagnostic(`seed ${seed} (GW_FUZZ_SEED=${seed} replays it)`);
  const rand = prng(seed);

  // a native session opened before the abuse, used throughout
  const bystander = await nativeSession(app.address);
  t.after(() => bystander.destroy());
  const served = async (when: string) => {
    const r = await nativeRequest(bystander, requestVars('GET', '/hello'), null, 10000);
    assert.equal(r.body.toString(), 'hello from A', `native bystander ${when}`);
    const u = await uwsgiRequest(app.address, requestVars('GET', '/hello'), undefined, { timeoutMs: 10000 });
    assert.equal(u.body.toString(), 'hello from A', `new uwsgi client ${when}`);
  };
  await served('before');

  const rss: number[] = [];
  const problems: string[] = [];
  const ROUNDS = 4;
  for (let round = 0; round < ROUNDS; round++) {
    const list = abuses(rand);
    // 16 at a time, with the bystander asked in between
    for (let i = 0; i < list.length; i += 16) {
      const batch = list.slice(i, i + 16);
      const results = await Promise.all(batch.map((a) => abuse(app.address, a)));
      batch.forEach((a, k) => {
        const { answer, closed } = results[k];
        if (a.expect === 'closed') {
          if (!closed) problems.push(`${a.name}: the connection was not closed`);
          return;
        }
        const why = a.expect(frames(answer), closed);
        if (why !== null) problems.push(`${a.name}: ${why}`);
      });
      assert.equal(app.proc.child.exitCode, null, `the appserver died: ${app.proc.output().slice(-2000)}`);
      await served(`during round ${round}`);
    }
    rss.push(procMemory(app.proc.child.pid as number).rss);
  }
  await served('after');
  t.diagnostic(`appserver RSS after each round: ${rss.map((r) => (r / 1048576).toFixed(1)).join(', ')} MB`);
  assert.deepEqual([...new Set(problems)], [], [...new Set(problems)].join('\n'));
  // rounds 2..4 repeat round 1's abuse: memory must not keep growing with it
  assert.ok(rss[ROUNDS - 1] - rss[0] < 40 * 1048576, `RSS grew ${((rss[ROUNDS - 1] - rss[0]) / 1048576).toFixed(1)} MB over ${ROUNDS - 1} rounds`);
  assert.match(app.proc.output(), /protocol error/, 'the refused connections are logged');
});
