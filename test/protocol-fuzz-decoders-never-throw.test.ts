// Fuzz: random and mutated bytes, in random chunkings, into every decoder.
// Each must never throw, never buffer past its stated limit, and end either
// in decoded output or in a typed ProtocolError (and stay failed after it).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { FRAME_HEADER_SIZE, MAX_FRAME_PAYLOAD, MAX_VARS_SIZE, SETTINGS_PAYLOAD_SIZE, UWSGI_HEADER_SIZE } from '../protocol/constants.ts';
import { ProtocolError } from '../protocol/errors.ts';
import { decodeSettings, FrameDecoder } from '../protocol/frame.ts';
import { HttpResponseError, HttpResponseParser } from '../protocol/http-response.ts';
import { encodeUwsgiRequest, UwsgiRequestDecoder } from '../protocol/uwsgi.ts';
import { decodeVars, encodeVars, type Vars } from '../protocol/vars.ts';
import { chunk, cutsArb, httpResponseArb, mutatedArb, nativeStreamArb, settingsArb, varsArb } from './helpers/protocol-arbitraries.ts';

const RUNS = 2000;
const randomBytes = fc.uint8Array({ maxLength: 600 }).map((a) => Buffer.from(a));

function inputs(valid: fc.Arbitrary<Buffer>): fc.Arbitrary<Buffer> {
  return fc.oneof(randomBytes, mutatedArb(valid), valid);
}

test('FrameDecoder: random and mutated input never throws, stays under one frame of buffer, ends in frames or a ProtocolError', () => {
  // Random bytes rarely start with a valid SETTINGS; also fuzz a decoder that has already seen one.
  const afterPreface = fc.tuple(fc.boolean(), inputs(nativeStreamArb));
  fc.assert(
    fc.property(afterPreface, cutsArb, ([skipPreface, bytes], cuts) => {
      let frames = 0;
      const d = new FrameDecoder(
        {
          onFrame(_t, _f, _s, payload) {
            frames++;
            assert.ok(payload.length <= MAX_FRAME_PAYLOAD);
          },
        },
        { expectPreface: !skipPreface },
      );
      let err: ProtocolError | null = null;
      for (const part of chunk(bytes, cuts)) {
        err = d.push(part);
        assert.ok(d.bufferedBytes <= FRAME_HEADER_SIZE + MAX_FRAME_PAYLOAD);
        if (err) break;
      }
      if (err) {
        assert.ok(err instanceof ProtocolError);
        assert.equal(typeof err.code, 'number');
        assert.equal(d.push(Buffer.from([1, 2, 3])), err, 'a failed decoder stays failed');
      }
      assert.ok(frames >= 0);
    }),
    { numRuns: RUNS },
  );
});

test('UwsgiRequestDecoder: random and mutated input never throws, buffers at most one vars block, delivers exactly CONTENT_LENGTH', () => {
  const valid = fc
    .tuple(varsArb(6), fc.uint8Array({ maxLength: 100 }))
    .map(([v, body]) => Buffer.concat([encodeUwsgiRequest([...v, 'CONTENT_LENGTH', String(body.length)]) as Buffer, body]));
  fc.assert(
    fc.property(inputs(valid), cutsArb, fc.option(fc.nat(200)), fc.option(fc.nat(MAX_VARS_SIZE)), (bytes, cuts, maxBody, maxVarsSize) => {
      let bodyBytes = 0;
      let ended = false;
      let vars: Vars | null = null;
      const d = new UwsgiRequestDecoder(
        {
          onRequest: (v) => {
            vars = v;
          },
          onBody: (c) => {
            bodyBytes += c.length;
          },
          onEnd: () => {
            ended = true;
          },
        },
        { maxBody: maxBody ?? undefined, maxVarsSize: maxVarsSize ?? undefined },
      );
      let err: ProtocolError | null = null;
      for (const part of chunk(bytes, cuts)) {
        err = d.push(part);
        assert.ok(d.bufferedBytes <= UWSGI_HEADER_SIZE + (maxVarsSize ?? MAX_VARS_SIZE));
        if (err) break;
      }
      if (err) assert.ok(err instanceof ProtocolError);
      if (ended) {
        assert.ok(vars !== null);
        assert.equal(bodyBytes, d.contentLength);
        if (maxBody !== null) assert.ok(bodyBytes <= maxBody);
      } else {
        assert.ok(bodyBytes <= d.contentLength);
      }
    }),
    { numRuns: RUNS },
  );
});

test('HttpResponseParser: random and mutated input never throws, never buffers past maxHeaderSize, ends in a response or a typed error', () => {
  const valid = httpResponseArb.map((r) => r.bytes);
  fc.assert(
    fc.property(inputs(valid), cutsArb, fc.integer({ min: 16, max: 2048 }), fc.boolean(), (bytes, cuts, maxHeaderSize, isHead) => {
      let heads = 0;
      let ends = 0;
      const p = new HttpResponseParser(
        {
          onHead: (status) => {
            heads++;
            assert.ok(status >= 100 && status <= 599);
          },
          onBody: () => {
            assert.equal(heads, 1, 'body only after the head');
          },
          onEnd: () => {
            ends++;
          },
        },
        { maxHeaderSize, isHead },
      );
      let err: HttpResponseError | null = null;
      for (const part of chunk(bytes, cuts)) {
        err = p.push(part);
        assert.ok(p.bufferedBytes <= maxHeaderSize);
        if (err) break;
      }
      err = err ?? p.finish();
      if (err) {
        assert.ok(err instanceof HttpResponseError && err instanceof ProtocolError);
        assert.equal(ends, 0);
      } else {
        assert.equal(heads, 1);
        assert.equal(ends, 1);
        assert.ok(p.done);
      }
    }),
    { numRuns: RUNS },
  );
});

test('decodeVars: any bytes give either vars that re-encode to the same bytes, or a PROTOCOL_ERROR', () => {
  const valid = varsArb().map((v) => encodeVars(v) as Buffer);
  fc.assert(
    fc.property(inputs(valid), (bytes) => {
      const r = decodeVars(bytes);
      if (r instanceof ProtocolError) return;
      assert.ok(Array.isArray(r) && r.length % 2 === 0);
      assert.ok((encodeVars(r) as Buffer).equals(bytes));
    }),
    { numRuns: RUNS },
  );
});

test('decodeSettings: any payload gives settings within limits or a ProtocolError', () => {
  const valid = settingsArb.map((b) => b.subarray(FRAME_HEADER_SIZE));
  fc.assert(
    fc.property(inputs(valid), (payload) => {
      const s = decodeSettings(payload);
      if (s instanceof ProtocolError) return;
      assert.equal(payload.length, SETTINGS_PAYLOAD_SIZE);
      assert.equal(s.version, 1);
      assert.ok(s.initialStreamWindow <= 0x7fffffff && s.initialConnectionWindow <= 0x7fffffff);
    }),
    { numRuns: RUNS },
  );
});
