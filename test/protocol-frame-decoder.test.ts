import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ErrorCode, FrameType } from '../protocol/constants.ts';
import { ProtocolError } from '../protocol/errors.ts';
import { encodeFrame, encodeRequestFrame, encodeSettings, FrameDecoder } from '../protocol/frame.ts';

function collect(bytes: Buffer, split: number[]) {
  const frames: Array<[number, number, number, string]> = [];
  const d = new FrameDecoder({ onFrame: (t, f, s, p) => frames.push([t, f, s, p.toString('hex')]) });
  let at = 0;
  let err: ProtocolError | null = null;
  for (const cut of [...split, bytes.length]) {
    err = d.push(bytes.subarray(at, cut)) ?? err;
    at = cut;
  }
  return { frames, err };
}

test('a request frame split at every byte boundary decodes to the same frames', () => {
  const bytes = Buffer.concat([
    encodeSettings({ maxConcurrentStreams: 10, initialStreamWindow: 1000, initialConnectionWindow: 5000 }),
    encodeRequestFrame(1, ['REQUEST_METHOD', 'GET', 'PATH_INFO', '/'], true) as Buffer,
    encodeFrame(FrameType.DATA, 1, 1, Buffer.from('hello')),
  ]);
  const whole = collect(bytes, []);
  assert.equal(whole.err, null);
  assert.equal(whole.frames.length, 3);
  for (let i = 1; i < bytes.length; i++) assert.deepEqual(collect(bytes, [i]).frames, whole.frames);
});

test('a frame before the SETTINGS preface is a PROTOCOL_ERROR', () => {
  const { err } = collect(encodeFrame(FrameType.DATA, 0, 1, Buffer.from('x')), []);
  assert.ok(err instanceof ProtocolError);
  assert.equal(err.code, ErrorCode.PROTOCOL_ERROR);
});
