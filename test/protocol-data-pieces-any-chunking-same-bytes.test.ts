// Property tests for DATA taken in pieces (FrameSink.onDataHeader/onDataPiece,
// what the session uses): whatever the chunking, a piece-taking sink sees the
// same frames as a whole-frame sink, each DATA payload arrives as non-empty
// ranges of the pushed chunks that concatenate to it (the last one marked),
// and nothing of a DATA payload is buffered in the decoder. Then the session
// on top: streams interleaved on one connection, cut anywhere, each stream
// gets exactly its own bytes, in order — read as a stream or taken whole
// (takeBody) — and stream credit comes back for all of them.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { Duplex } from 'node:stream';
import { test } from 'node:test';
import fc from 'fast-check';
import { Flag, FRAME_HEADER_SIZE, FrameType } from '../protocol/constants.ts';
import { encodeFrame, encodeRequestFrame, encodeSettings, FrameDecoder, type FrameSink } from '../protocol/frame.ts';
import { GatewireSession, type GatewireStream } from '../protocol/session.ts';
import { chunk, cutsArb, mutatedArb, nativeStreamArb, settingsArb } from './helpers/protocol-arbitraries.ts';

type Event = { type: number; flags: number; streamId: number; payloadHex: string };

function wholeFrames(parts: Buffer[]): { events: Event[]; error: string | null } {
  const events: Event[] = [];
  const d = new FrameDecoder({ onFrame: (type, flags, streamId, payload) => events.push({ type, flags, streamId, payloadHex: payload.toString('hex') }) });
  let error: string | null = null;
  for (const p of parts) {
    const err = d.push(p);
    if (err !== null) {
      error = err.message;
      break;
    }
  }
  return { events, error };
}

/** The same frames, taken with DATA in pieces; checks every piece on the way. */
function pieceFrames(parts: Buffer[]): { events: Event[]; error: string | null; maxBufferedInData: number } {
  const events: Event[] = [];
  let current: { flags: number; streamId: number; length: number; got: Buffer[] } | null = null;
  let pushing: Buffer = Buffer.alloc(0);
  let maxBufferedInData = 0;
  const sink: FrameSink = {
    onFrame(type, flags, streamId, payload) {
      assert.notEqual(type, FrameType.DATA, 'DATA never reaches onFrame when the sink takes pieces');
      assert.equal(current, null, 'a frame inside an unfinished DATA payload');
      events.push({ type, flags, streamId, payloadHex: payload.toString('hex') });
    },
    onDataHeader(flags, streamId, length) {
      assert.equal(current, null, 'a DATA header inside an unfinished DATA payload');
      if (length === 0) events.push({ type: FrameType.DATA, flags, streamId, payloadHex: '' });
      else current = { flags, streamId, length, got: [] };
    },
    onDataPiece(c, start, end, last) {
      assert.ok(current !== null, 'a piece without a DATA header');
      assert.equal(c, pushing, 'a piece is a range of the chunk being pushed');
      assert.ok(start >= 0 && start < end && end <= c.length, `piece [${start}, ${end}) of a ${c.length}-byte chunk`);
      current.got.push(Buffer.from(c.subarray(start, end)));
      const have = current.got.reduce((n, b) => n + b.length, 0);
      assert.ok(have <= current.length, 'pieces beyond the frame length');
      assert.equal(last, have === current.length, '`last` exactly on the final piece');
      if (last) {
        events.push({ type: FrameType.DATA, flags: current.flags, streamId: current.streamId, payloadHex: Buffer.concat(current.got).toString('hex') });
        current = null;
      }
    },
  };
  const d = new FrameDecoder(sink);
  let error: string | null = null;
  for (const p of parts) {
    pushing = p;
    const err = d.push(p);
    if (current !== null) maxBufferedInData = Math.max(maxBufferedInData, d.bufferedBytes);
    if (err !== null) {
      error = err.message;
      break;
    }
  }
  return { events, error, maxBufferedInData };
}

/** SETTINGS, then DATA frames up to 3 KiB on a few streams with other frames between (cut anywhere, payloads straddle chunks). */
const dataHeavyArb = fc
  .tuple(
    settingsArb,
    fc.array(
      fc.oneof(
        fc.tuple(fc.integer({ min: 1, max: 4 }), fc.uint8Array({ maxLength: 3000, size: 'max' }), fc.boolean()).map(([id, b, end]) => encodeFrame(FrameType.DATA, end ? Flag.END_STREAM : 0, id, Buffer.from(b))),
        nativeStreamArb.map((s) => s.subarray(FRAME_HEADER_SIZE + 20)),
      ),
      { maxLength: 10 },
    ),
  )
  .map(([s, f]) => Buffer.concat([s, ...f]));

test('DATA in pieces: any chunking gives the frames a whole-frame sink gets, payloads exact, none buffered', () => {
  fc.assert(
    fc.property(dataHeavyArb, cutsArb, (bytes, cuts) => {
      const parts = chunk(bytes, cuts);
      const whole = wholeFrames([bytes]);
      const pieces = pieceFrames(parts);
      assert.equal(pieces.error, whole.error);
      assert.deepEqual(pieces.events, whole.events);
      assert.equal(pieces.maxBufferedInData, 0, 'a DATA payload split across chunks is never assembled in the decoder');
    }),
    { numRuns: 300 },
  );
});

test('DATA in pieces: one byte at a time gives the same frames', () => {
  fc.assert(
    fc.property(dataHeavyArb, (bytes) => {
      const parts: Buffer[] = [];
      for (let i = 0; i < bytes.length; i++) parts.push(bytes.subarray(i, i + 1));
      assert.deepEqual(pieceFrames(parts).events, wholeFrames([bytes]).events);
    }),
    { numRuns: 30 },
  );
});

test('DATA in pieces: mutated input never throws and fails where the whole-frame decoder fails', () => {
  fc.assert(
    fc.property(mutatedArb(dataHeavyArb), cutsArb, (bytes, cuts) => {
      const whole = wholeFrames([bytes]);
      const pieces = pieceFrames(chunk(bytes, cuts));
      assert.equal(pieces.error, whole.error);
      // Up to the error both saw the same complete frames (a DATA payload cut by the error is not complete).
      assert.deepEqual(pieces.events, whole.events);
    }),
    { numRuns: 300 },
  );
});

// ---------------------------------------------------------------- the session on top

/** One end of an in-memory connection: what the test writes comes out as the session's socket reads, chunk for chunk. */
function memorySocket(): { socket: Duplex; feed(b: Buffer): void; out: Buffer[] } {
  const out: Buffer[] = [];
  const socket = new Duplex({
    read() {},
    write(c: Buffer, _e, cb) {
      out.push(Buffer.from(c));
      cb();
    },
  });
  return { socket, feed: (b) => socket.push(b), out };
}

interface Upload {
  id: number;
  body: Buffer;
  /** How the app reads it: a 'data' listener, paused reads, or the whole body at once (takeBody). */
  reader: 'data' | 'read' | 'whole';
}

const uploadsArb = fc
  .array(fc.tuple(fc.uint8Array({ maxLength: 9000, size: 'max' }), fc.constantFrom('data' as const, 'read' as const, 'whole' as const)), { minLength: 1, maxLength: 4 })
  .map((list) => list.map(([b, reader], i): Upload => ({ id: 2 * i + 1, body: Buffer.from(b), reader })));

/** REQUESTs, then the bodies' DATA frames (≤ 1,500 bytes each) interleaved in `order`, the last frame of each with END_STREAM. */
function wire(uploads: Upload[], order: number[]): Buffer {
  const frames: Buffer[] = [encodeSettings({ maxConcurrentStreams: 100, initialStreamWindow: 1 << 20, initialConnectionWindow: 1 << 24 })];
  const left = uploads.map((u) => {
    frames.push(encodeRequestFrame(u.id, ['REQUEST_METHOD', 'POST', 'REQUEST_URI', '/'], false) as Buffer);
    const parts: Buffer[] = [];
    for (let at = 0; at < u.body.length; at += 1500) parts.push(u.body.subarray(at, at + 1500));
    if (parts.length === 0) parts.push(Buffer.alloc(0));
    return parts;
  });
  let k = 0;
  while (left.some((l) => l.length > 0)) {
    const open = left.map((l, i) => (l.length > 0 ? i : -1)).filter((i) => i >= 0);
    const i = open[(order[k++ % Math.max(1, order.length)] ?? 0) % open.length];
    const part = left[i].shift()!;
    frames.push(encodeFrame(FrameType.DATA, left[i].length === 0 ? Flag.END_STREAM : 0, uploads[i].id, part));
  }
  return Buffer.concat(frames);
}

function readBody(stream: GatewireStream, reader: Upload['reader']): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const got: Buffer[] = [];
    stream.once('error', reject);
    stream.once('end', () => resolve(Buffer.concat(got)));
    if (reader === 'whole') stream.takeBody((c, s, e) => got.push(Buffer.from(c.subarray(s, e))));
    else if (reader === 'data') stream.on('data', (c: Buffer) => got.push(Buffer.from(c)));
    else
      stream.on('readable', () => {
        for (let c = stream.read() as Buffer | null; c !== null; c = stream.read() as Buffer | null) got.push(Buffer.from(c));
      });
  });
}

test('session: interleaved uploads cut anywhere reach each stream whole, in order, unmixed, whatever the reader', async () => {
  await fc.assert(
    fc.asyncProperty(uploadsArb, fc.array(fc.nat(), { maxLength: 20 }), cutsArb, async (uploads, order, cuts) => {
      const { socket, feed } = memorySocket();
      const session = new GatewireSession(socket, { role: 'server' });
      session.on('error', () => {});
      const bodies = new Map<number, Promise<Buffer>>();
      session.on('stream', (stream: GatewireStream) => {
        const u = uploads.find((x) => x.id === stream.id)!;
        bodies.set(stream.id, readBody(stream, u.reader));
      });
      try {
        for (const part of chunk(wire(uploads, order), cuts)) if (part.length > 0) feed(part);
        await new Promise((r) => setImmediate(r));
        assert.equal(bodies.size, uploads.length);
        for (const u of uploads) {
          const got = await Promise.race([bodies.get(u.id)!, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`stream ${u.id} never ended`)), 2000).unref())]);
          assert.ok(got.equals(u.body), `stream ${u.id} (${u.reader}): ${got.length} bytes, expected ${u.body.length}${got.length === u.body.length ? ' (same length, other bytes or order)' : ''}`);
        }
        assert.equal(session.destroyed, false, 'no protocol error');
      } finally {
        session.destroy();
      }
    }),
    { numRuns: 150, endOnFailure: true },
  );
});

test('session: a body taken whole returns its stream credit (the peer is never stalled by takeBody)', async () => {
  const { socket, feed, out } = memorySocket();
  const session = new GatewireSession(socket, { role: 'server', initialStreamWindow: 4096 });
  session.on('error', () => {});
  let taken = 0;
  session.on('stream', (stream: GatewireStream) => {
    stream.takeBody((_c, s, e) => {
      taken += e - s;
    });
  });
  feed(encodeSettings({ maxConcurrentStreams: 10, initialStreamWindow: 65535, initialConnectionWindow: 1 << 20 }));
  feed(encodeRequestFrame(1, ['REQUEST_METHOD', 'POST'], false) as Buffer);
  await new Promise((r) => setImmediate(r));
  feed(encodeFrame(FrameType.DATA, 0, 1, Buffer.alloc(4096, 1)));
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  assert.equal(taken, 4096);
  const windows: Array<{ id: number; inc: number }> = [];
  new FrameDecoder({
    onFrame(type, _f, id, payload) {
      if (type === FrameType.WINDOW) windows.push({ id, inc: payload.readUInt32LE(0) });
    },
  }).push(Buffer.concat(out));
  assert.ok(
    windows.some((w) => w.id === 1 && w.inc >= 2048),
    `stream 1 got its credit back: ${JSON.stringify(windows)}`,
  );
  // More than the original window can now be sent without a flow-control error.
  feed(encodeFrame(FrameType.DATA, Flag.END_STREAM, 1, Buffer.alloc(2048, 2)));
  await new Promise((r) => setImmediate(r));
  assert.equal(taken, 4096 + 2048);
  assert.equal(session.destroyed, false);
  session.destroy();
  await once(socket, 'close').catch(() => {});
});
