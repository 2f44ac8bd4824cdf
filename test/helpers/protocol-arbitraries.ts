// fast-check arbitraries and chunking helpers shared by the protocol property
// and fuzz tests.
import fc from 'fast-check';
import { Flag, FrameType, MAX_WINDOW } from '../../protocol/constants.ts';
import {
  encodeFrame,
  encodeGoaway,
  encodePing,
  encodeRequestFrame,
  encodeResponseFrame,
  encodeReset,
  encodeSettings,
  encodeWindow,
} from '../../protocol/frame.ts';

/** A string of latin1 code units (any byte). */
export const latin1 = (maxLength = 40) => fc.string({ unit: fc.nat(255).map((c) => String.fromCharCode(c)), maxLength });

/** A flat vars list: [k0, v0, k1, v1, ...]. */
export const varsArb = (maxPairs = 12) =>
  fc.array(fc.tuple(latin1(24), latin1(60)), { maxLength: maxPairs }).map((pairs) => pairs.flat());

/** Splits `bytes` at the given cut points (any numbers; reduced modulo the length, sorted). */
export function chunk(bytes: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let at = 0;
  for (const p of points) {
    out.push(bytes.subarray(at, p));
    at = p;
  }
  out.push(bytes.subarray(at));
  return out;
}

export const cutsArb = fc.array(fc.nat(), { maxLength: 12 });

/** A description of one native frame, as the tests compare it. */
export interface FrameDesc {
  type: number;
  flags: number;
  streamId: number;
  payloadHex: string;
}

const streamId = fc.integer({ min: 1, max: 0xffffffff });
const bytesArb = (max: number) => fc.uint8Array({ maxLength: max }).map((a) => Buffer.from(a));

/** One encoded native frame other than SETTINGS, valid in shape. */
export const frameBytesArb: fc.Arbitrary<Buffer> = fc.oneof(
  fc.tuple(streamId, varsArb(), fc.boolean()).map(([id, v, end]) => encodeRequestFrame(id, v, end) as Buffer),
  fc.tuple(streamId, fc.integer({ min: 100, max: 599 }), varsArb(), fc.boolean()).map(([id, s, h, end]) => encodeResponseFrame(id, s, h, end) as Buffer),
  fc.tuple(streamId, bytesArb(300), fc.boolean()).map(([id, b, end]) => encodeFrame(FrameType.DATA, end ? Flag.END_STREAM : 0, id, b)),
  fc.tuple(streamId, fc.nat(0xffffffff)).map(([id, code]) => encodeReset(id, code)),
  fc.tuple(fc.nat(0xffffffff), fc.integer({ min: 1, max: MAX_WINDOW })).map(([id, inc]) => encodeWindow(id, inc)),
  fc.tuple(bytesArb(8).map((b) => Buffer.concat([b, Buffer.alloc(8 - b.length)])), fc.boolean()).map(([o, ack]) => encodePing(o, ack)),
  fc.tuple(fc.nat(0xffffffff), fc.nat(0xffffffff), fc.string({ maxLength: 30 })).map(([last, code, dbg]) => encodeGoaway(last, code, dbg)),
);

export const settingsArb = fc
  .tuple(fc.nat(0xffffffff), fc.nat(MAX_WINDOW), fc.nat(MAX_WINDOW))
  .map(([m, s, c]) => encodeSettings({ maxConcurrentStreams: m, initialStreamWindow: s, initialConnectionWindow: c }));

/** A native byte stream: SETTINGS then frames. */
export const nativeStreamArb = fc.tuple(settingsArb, fc.array(frameBytesArb, { maxLength: 8 })).map(([s, f]) => Buffer.concat([s, ...f]));

/** Mutations of a valid input: flipped bytes, inserted and deleted runs, truncation. */
export function mutatedArb(valid: fc.Arbitrary<Buffer>): fc.Arbitrary<Buffer> {
  const edit = fc.oneof(
    fc.tuple(fc.constant('flip' as const), fc.nat(), fc.nat(255)),
    fc.tuple(fc.constant('insert' as const), fc.nat(), fc.nat(255)),
    fc.tuple(fc.constant('delete' as const), fc.nat(), fc.nat(8)),
    fc.tuple(fc.constant('truncate' as const), fc.nat(), fc.nat()),
  );
  return fc.tuple(valid, fc.array(edit, { minLength: 1, maxLength: 4 })).map(([buf, edits]) => {
    let b = Buffer.from(buf);
    for (const [kind, at, arg] of edits) {
      const i = b.length === 0 ? 0 : at % b.length;
      if (kind === 'flip' && b.length > 0) b[i] = arg;
      else if (kind === 'insert') b = Buffer.concat([b.subarray(0, i), Buffer.from([arg]), b.subarray(i)]);
      else if (kind === 'delete') b = Buffer.concat([b.subarray(0, i), b.subarray(i + arg + 1)]);
      else if (kind === 'truncate') b = b.subarray(0, i);
    }
    return b;
  });
}

// ---------------------------------------------------------------- raw HTTP responses

const tchar = fc.constantFrom(...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&\'*+-.^_`|~'.split(''));
const token = fc.string({ unit: tchar, minLength: 1, maxLength: 16 });
/** A header value with no leading/trailing whitespace and no control bytes. */
const fieldValue = fc
  .string({ unit: fc.integer({ min: 0x20, max: 0xff }).filter((c) => c !== 0x7f).map((c) => String.fromCharCode(c)), maxLength: 40 })
  .map((s) => s.trim().replace(/^[ \t]+|[ \t]+$/g, ''));

export interface ResponseDesc {
  status: number;
  reason: string;
  headers: string[];
  body: string;
  framing: 'length' | 'chunked' | 'close';
  bytes: Buffer;
}

const RESERVED = new Set(['content-length', 'transfer-encoding', 'status', 'location']);

/** A well-formed raw HTTP response with a body framed by Content-Length, chunked encoding, or close. */
export const httpResponseArb: fc.Arbitrary<ResponseDesc> = fc
  .record({
    status: fc.integer({ min: 200, max: 599 }).filter((s) => s !== 204 && s !== 304),
    reason: fc.constantFrom('OK', 'Not Found', '', 'Some Reason'),
    headers: fc.array(fc.tuple(token.filter((t) => !RESERVED.has(t.toLowerCase())), fieldValue), { maxLength: 8 }),
    body: latin1(200),
    framing: fc.constantFrom('length' as const, 'chunked' as const, 'close' as const),
    chunkSizes: fc.array(fc.integer({ min: 1, max: 50 }), { maxLength: 10 }),
    ext: fc.boolean(),
    lf: fc.boolean(),
  })
  .map((r) => {
    const nl = r.lf ? '\n' : '\r\n';
    const headers = r.headers.flat();
    if (r.framing === 'length') headers.push('Content-Length', String(r.body.length));
    if (r.framing === 'chunked') headers.push('Transfer-Encoding', 'chunked');
    let text = `HTTP/1.1 ${r.status}${r.reason === '' ? '' : ` ${r.reason}`}${nl}`;
    for (let i = 0; i < headers.length; i += 2) text += `${headers[i]}: ${headers[i + 1]}${nl}`;
    text += nl;
    if (r.framing === 'chunked') {
      let at = 0;
      let k = 0;
      while (at < r.body.length) {
        const n = Math.min(r.chunkSizes[k++ % Math.max(1, r.chunkSizes.length)] ?? 7, r.body.length - at);
        text += `${n.toString(16)}${r.ext ? ';x=y' : ''}\r\n${r.body.slice(at, at + n)}\r\n`;
        at += n;
      }
      text += `0\r\n${r.ext ? 'X-Trailer: 1\r\n' : ''}\r\n`;
    } else {
      text += r.body;
    }
    return { status: r.status, reason: r.reason, headers, body: r.body, framing: r.framing, bytes: Buffer.from(text, 'latin1') };
  });
