// The vars block shared by uwsgi classic packets and native REQUEST/RESPONSE
// frames: a sequence of `u16le keylen, key, u16le vallen, value`.
//
// Hand-written because it is the codec itself: no library speaks uwsgi vars.
// Keys and values are byte strings; we map them to JS strings with latin1 so
// every byte round-trips unchanged (the same choice Node makes for HTTP/1.1
// header values), and vars are kept as a flat [k0, v0, k1, v1, ...] array
// like Node's rawHeaders: order and repeats are preserved and decoding
// allocates nothing but the strings themselves.
import { MAX_VARS_SIZE } from './constants.ts';
import { type ProtocolError, protocolError } from './errors.ts';

/** Flat list of alternating names and values, in wire order; repeats allowed. */
export type Vars = string[];

/** Encoded size of a vars block, or -1 if a key or value is longer than a u16 allows. */
export function varsSize(vars: Vars): number {
  let size = 0;
  for (let i = 0; i < vars.length; i++) {
    const len = vars[i].length;
    if (len > 0xffff) return -1;
    size += 2 + len;
  }
  return size;
}

/** Values longer than this go through one native latin1Write; shorter ones are copied in JS. */
const NATIVE_WRITE_MIN = 48;

/**
 * Writes `vars` at `offset` and returns the offset after them. The caller has
 * checked the size with varsSize(); strings are written as latin1, so any code
 * unit above 0xff is truncated to its low byte (callers pass byte strings).
 *
 * Why a byte loop: a request's vars are a few dozen short strings. Copying
 * their code units straight into the buffer allocates nothing, while the
 * earlier build-one-latin1-string-then-write (a rope of ~2 × pairs cons strings,
 * flattened once) left ~2 KB of garbage per request for the proxy's GC to
 * collect (bench/README.md "Where the time goes"). Long values (cookies,
 * tokens) still take one native call, cheaper than a JS loop over their bytes.
 */
export function writeVars(target: Buffer, offset: number, vars: Vars): number {
  let p = offset;
  for (let i = 0; i < vars.length; i++) {
    const s = vars[i];
    const len = s.length;
    target[p] = len & 0xff;
    target[p + 1] = len >>> 8;
    p = writeLatin1(target, p + 2, s);
  }
  return p;
}

/**
 * Writes the byte string `s` (latin1: one byte per code unit, higher units
 * truncated) at `offset` and returns the offset after it; room was checked by
 * the caller. Short strings are copied in JS, long ones in one native call
 * (see writeVars). Also what the appserver writes uwsgi response heads with.
 */
export function writeLatin1(target: Buffer, offset: number, s: string): number {
  const len = s.length;
  if (len >= NATIVE_WRITE_MIN) return offset + target.latin1Write(s, offset, len);
  let p = offset;
  for (let j = 0; j < len; j++) target[p++] = s.charCodeAt(j);
  return p;
}

/** Encodes a vars block on its own; fails with VARS_TOO_LARGE past MAX_VARS_SIZE. */
export function encodeVars(vars: Vars, limit = MAX_VARS_SIZE): Buffer | ProtocolError {
  if (vars.length % 2 !== 0) return protocolError('PROTOCOL_ERROR', 'vars must be name/value pairs');
  const size = varsSize(vars);
  if (size < 0 || size > limit) {
    return protocolError('VARS_TOO_LARGE', `vars block of ${size < 0 ? 'over 65535' : size} bytes exceeds ${limit}`);
  }
  const buf = Buffer.allocUnsafe(size);
  writeVars(buf, 0, vars);
  return buf;
}

/**
 * Decodes the vars block in buf[start, end). A truncated key or value, or a
 * key without its value, is a PROTOCOL_ERROR: the block must be exact.
 *
 * Why one slice: the whole block is turned into one latin1 string by a single
 * native call and keys/values are substrings of it (latin1 is one char per
 * byte, so byte offsets are string offsets). That is ~5× faster than one
 * latin1Slice per key and value; longer substrings share the block string,
 * which is at most 64 KiB and lives as long as the request's vars.
 */
export function decodeVars(buf: Buffer, start = 0, end = buf.length, out: Vars = []): Vars | ProtocolError {
  const block = end > start ? buf.latin1Slice(start, end) : '';
  let pos = start;
  while (pos < end) {
    if (pos + 2 > end) return protocolError('PROTOCOL_ERROR', `vars: truncated key length at byte ${pos - start}`);
    const klen = buf[pos] | (buf[pos + 1] << 8);
    pos += 2;
    if (pos + klen > end) return protocolError('PROTOCOL_ERROR', `vars: key of ${klen} bytes overruns the block`);
    const key = block.slice(pos - start, pos - start + klen);
    pos += klen;
    if (pos + 2 > end) return protocolError('PROTOCOL_ERROR', `vars: key ${JSON.stringify(key.slice(0, 64))} has no value`);
    const vlen = buf[pos] | (buf[pos + 1] << 8);
    pos += 2;
    if (pos + vlen > end) return protocolError('PROTOCOL_ERROR', `vars: value of ${vlen} bytes overruns the block`);
    out.push(key, vlen === 0 ? '' : block.slice(pos - start, pos - start + vlen));
    pos += vlen;
  }
  return out;
}

/** First value of `name` in a vars list (exact, case-sensitive match), or undefined. */
export function getVar(vars: Vars, name: string): string | undefined {
  for (let i = 0; i < vars.length; i += 2) if (vars[i] === name) return vars[i + 1];
  return undefined;
}
