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

const preface = encodeSettings({ maxConcurrentStreams: 1, initialStreamWindow: 1, initialConnectionWindow: 1 });

test('frame shape violations end the connection with the documented codes', () => {
  const header = (type: number, length: number, flags: number, stream: number) => {
    const b = Buffer.alloc(8 + length);
    b[0] = type;
    b.writeUInt16LE(length, 1);
    b[3] = flags;
    b.writeUInt32LE(stream, 4);
    return b;
  };
  const cases: Array<[string, Buffer, number]> = [
    ['unknown type', header(0x09, 0, 0, 0), ErrorCode.PROTOCOL_ERROR],
    ['type 0', header(0x00, 0, 0, 0), ErrorCode.PROTOCOL_ERROR],
    ['SETTINGS twice', preface, ErrorCode.PROTOCOL_ERROR],
    ['PING of 7 bytes', header(FrameType.PING, 7, 0, 0), ErrorCode.FRAME_SIZE_ERROR],
    ['PING on a stream', header(FrameType.PING, 8, 0, 1), ErrorCode.PROTOCOL_ERROR],
    ['RESET on stream 0', header(FrameType.RESET, 4, 0, 0), ErrorCode.PROTOCOL_ERROR],
    ['RESET of 5 bytes', header(FrameType.RESET, 5, 0, 1), ErrorCode.FRAME_SIZE_ERROR],
    ['WINDOW of 3 bytes', header(FrameType.WINDOW, 3, 0, 0), ErrorCode.FRAME_SIZE_ERROR],
    ['GOAWAY of 7 bytes', header(FrameType.GOAWAY, 7, 0, 0), ErrorCode.FRAME_SIZE_ERROR],
    ['GOAWAY on a stream', header(FrameType.GOAWAY, 8, 0, 1), ErrorCode.PROTOCOL_ERROR],
    ['RESPONSE of 1 byte', header(FrameType.RESPONSE, 1, 0, 1), ErrorCode.FRAME_SIZE_ERROR],
    ['REQUEST on stream 0', header(FrameType.REQUEST, 0, 0, 0), ErrorCode.PROTOCOL_ERROR],
    ['DATA on stream 0', header(FrameType.DATA, 0, 0, 0), ErrorCode.PROTOCOL_ERROR],
  ];
  for (const [name, frame, code] of cases) {
    const { err } = collect(Buffer.concat([preface, frame]), []);
    assert.equal(err?.code, code, name);
  }
});

test('a SETTINGS preface with another version, a bad magic or a window above 2^31-1 is refused', () => {
  const v2 = Buffer.from(preface);
  v2[12] = 2;
  assert.equal(collect(v2, []).err?.code, ErrorCode.UNSUPPORTED_VERSION);
  const magic = Buffer.from(preface);
  magic[8] = 0x58;
  assert.equal(collect(magic, []).err?.code, ErrorCode.PROTOCOL_ERROR);
  const win = Buffer.from(preface);
  win.writeUInt32LE(0x80000000, 20);
  assert.equal(collect(win, []).err?.code, ErrorCode.FLOW_CONTROL_ERROR);
});

test('a payload split across chunks is buffered once, never beyond one frame', () => {
  const big = encodeFrame(FrameType.DATA, 0, 1, Buffer.alloc(65535, 7));
  const d = new FrameDecoder({ onFrame() {} });
  assert.equal(d.push(preface), null);
  assert.equal(d.push(big.subarray(0, 100)), null);
  assert.equal(d.bufferedBytes, 65535);
  assert.equal(d.push(big.subarray(100)), null);
  assert.equal(d.bufferedBytes, 0);
  assert.ok(d.idle);
});
