// Property tests: every decoder gives the same result whatever the chunking of
// its input (including a split at every single byte boundary), and
// encode → decode → encode is exact for vars, native frames and uwsgi packets.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { FrameType } from '../protocol/constants.ts';
import { encodeFrame, FrameDecoder } from '../protocol/frame.ts';
import { HttpResponseParser } from '../protocol/http-response.ts';
import { encodeUwsgiRequest, UwsgiRequestDecoder } from '../protocol/uwsgi.ts';
import { decodeVars, encodeVars, type Vars } from '../protocol/vars.ts';
import { chunk, cutsArb, httpResponseArb, nativeStreamArb, varsArb } from './helpers/protocol-arbitraries.ts';

const RUNS = 300;

function decodeFrames(parts: Buffer[]) {
  const frames: Array<{ type: number; flags: number; streamId: number; payload: Buffer }> = [];
  const d = new FrameDecoder({ onFrame: (type, flags, streamId, payload) => frames.push({ type, flags, streamId, payload: Buffer.from(payload) }) });
  for (const p of parts) assert.equal(d.push(p), null);
  assert.ok(d.idle);
  return frames;
}

test('vars: encode → decode → encode is exact for any latin1 keys and values', () => {
  fc.assert(
    fc.property(varsArb(20), (vars) => {
      const bytes = encodeVars(vars) as Buffer;
      const back = decodeVars(bytes) as Vars;
      assert.deepEqual(back, vars);
      assert.ok((encodeVars(back) as Buffer).equals(bytes));
    }),
    { numRuns: RUNS },
  );
});

test('native frames: any chunking decodes to the same frames, which re-encode to the same bytes', () => {
  fc.assert(
    fc.property(nativeStreamArb, cutsArb, (bytes, cuts) => {
      const whole = decodeFrames([bytes]);
      assert.deepEqual(decodeFrames(chunk(bytes, cuts)), whole);
      const again = Buffer.concat(whole.map((f) => encodeFrame(f.type, f.flags, f.streamId, f.payload)));
      assert.ok(again.equals(bytes));
    }),
    { numRuns: RUNS },
  );
});

test('native frames: a split at every single byte boundary decodes to the same frames', () => {
  fc.assert(
    fc.property(nativeStreamArb, (bytes) => {
      const whole = decodeFrames([bytes]);
      for (let i = 1; i < bytes.length; i++) assert.deepEqual(decodeFrames([bytes.subarray(0, i), bytes.subarray(i)]), whole);
    }),
    { numRuns: 40 },
  );
});

test('native frames: one byte at a time decodes the same frames', () => {
  fc.assert(
    fc.property(nativeStreamArb, (bytes) => {
      const parts: Buffer[] = [];
      for (let i = 0; i < bytes.length; i++) parts.push(bytes.subarray(i, i + 1));
      assert.deepEqual(decodeFrames(parts), decodeFrames([bytes]));
    }),
    { numRuns: 40 },
  );
});

function decodeUwsgi(parts: Buffer[]) {
  const r = { vars: null as Vars | null, m1: -1, m2: -1, body: [] as Buffer[], ended: false };
  const d = new UwsgiRequestDecoder({
    onRequest(vars, m1, m2) {
      Object.assign(r, { vars, m1, m2 });
    },
    onBody: (c) => r.body.push(Buffer.from(c)),
    onEnd: () => {
      r.ended = true;
    },
  });
  for (const p of parts) assert.equal(d.push(p), null);
  return { ...r, body: Buffer.concat(r.body) };
}

const uwsgiPacketArb = fc
  .tuple(varsArb(10), fc.uint8Array({ maxLength: 400 }), fc.nat(255), fc.nat(255))
  .map(([vars, body, m1, m2]) => {
    const v = vars.filter((_, i) => vars[i - (i % 2)] !== 'CONTENT_LENGTH');
    v.push('CONTENT_LENGTH', body.length === 0 ? '' : String(body.length));
    return { vars: v, body: Buffer.from(body), m1, m2, bytes: Buffer.concat([encodeUwsgiRequest(v, m1, m2) as Buffer, body]) };
  });

test('uwsgi packets: any chunking gives the same vars, modifiers and body; re-encoding is exact', () => {
  fc.assert(
    fc.property(uwsgiPacketArb, cutsArb, (p, cuts) => {
      const r = decodeUwsgi(chunk(p.bytes, cuts));
      assert.ok(r.ended);
      assert.deepEqual(r.vars, p.vars);
      assert.equal(r.m1, p.m1);
      assert.equal(r.m2, p.m2);
      assert.ok(r.body.equals(p.body));
      assert.ok(Buffer.concat([encodeUwsgiRequest(r.vars!, r.m1, r.m2) as Buffer, r.body]).equals(p.bytes));
    }),
    { numRuns: RUNS },
  );
});

test('uwsgi packets: a split at every single byte boundary gives the same request', () => {
  fc.assert(
    fc.property(uwsgiPacketArb, (p) => {
      const whole = decodeUwsgi([p.bytes]);
      for (let i = 1; i < p.bytes.length; i++) assert.deepEqual(decodeUwsgi([p.bytes.subarray(0, i), p.bytes.subarray(i)]), whole);
    }),
    { numRuns: 30 },
  );
});

function parseResponse(parts: Buffer[]) {
  const r = { status: 0, reason: '', headers: [] as string[], body: [] as Buffer[], ends: 0 };
  const p = new HttpResponseParser({
    onHead(status, reason, headers) {
      Object.assign(r, { status, reason, headers });
    },
    onBody: (c) => r.body.push(Buffer.from(c)),
    onEnd: () => {
      r.ends++;
    },
  });
  for (const part of parts) assert.equal(p.push(part), null);
  assert.equal(p.finish(), null);
  return { ...r, body: Buffer.concat(r.body).toString('latin1') };
}

test('raw HTTP responses: any chunking gives the same head and body, whatever the framing', () => {
  fc.assert(
    fc.property(httpResponseArb, cutsArb, (resp, cuts) => {
      const r = parseResponse(chunk(resp.bytes, cuts));
      assert.equal(r.status, resp.status);
      assert.equal(r.reason, resp.reason);
      assert.deepEqual(r.headers, resp.headers);
      assert.equal(r.body, resp.body);
      assert.equal(r.ends, 1);
    }),
    { numRuns: RUNS },
  );
});

test('raw HTTP responses: a split at every single byte boundary gives the same result', () => {
  fc.assert(
    fc.property(httpResponseArb, (resp) => {
      const whole = parseResponse([resp.bytes]);
      for (let i = 1; i < resp.bytes.length; i++) assert.deepEqual(parseResponse([resp.bytes.subarray(0, i), resp.bytes.subarray(i)]), whole);
    }),
    { numRuns: 30 },
  );
});

test('DATA payloads of any bytes survive the round trip', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 2000 }), (data) => {
      const bytes = Buffer.concat([
        Buffer.from('01140000000000004757495201000000800000000000040000001000', 'hex'),
        encodeFrame(FrameType.DATA, 0, 7, Buffer.from(data)),
      ]);
      const frames = decodeFrames([bytes]);
      assert.ok(frames[1].payload.equals(Buffer.from(data)));
    }),
    { numRuns: 100 },
  );
});
