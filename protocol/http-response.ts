// Incremental parser for the raw HTTP/1.x response a uwsgi classic upstream
// (a real uWSGI, or a CGI-style app behind it) writes back on the connection.
//
// Hand-written on purpose: Node does not expose llhttp as a public API (the
// HTTPParser binding behind `_http_common` is internal and undocumented), and
// undici's llhttp wasm build is an internal module of undici, not an export.
// Neither accepts the CGI form either: a response that starts with a
// `Status: 404 Not Found` header and has no status line at all, which
// uwsgi/CGI peers may send.
//
// Contract in the style of undici's parser: push() hands body bytes out as
// views into the pushed chunk (zero copy), never throws, and returns null or
// the typed error that ended the message (the same error forever after).
// Only a head split across chunks is copied, into one buffer bounded by
// maxHeaderSize; chunked framing and trailers are decoded by a byte state
// machine that buffers nothing.
import { ErrorCode } from './constants.ts';
import { ProtocolError } from './errors.ts';

export type HttpResponseErrorKind =
  | 'HEADERS_TOO_LARGE'
  | 'INVALID_STATUS'
  | 'INVALID_HEADER'
  | 'INVALID_CONTENT_LENGTH'
  | 'INVALID_CHUNK'
  | 'TRUNCATED';

/** A malformed or oversized upstream response; `kind` says which rule was broken (a proxy answers 502 for all of them). */
export class HttpResponseError extends ProtocolError {
  readonly kind: HttpResponseErrorKind;
  constructor(kind: HttpResponseErrorKind, message: string) {
    super(kind === 'HEADERS_TOO_LARGE' ? ErrorCode.VARS_TOO_LARGE : ErrorCode.PROTOCOL_ERROR, message);
    this.name = 'HttpResponseError';
    this.kind = kind;
  }
}

export interface HttpResponseHandler {
  /** Once per response (interim 1xx other than 101 are skipped). rawHeaders: flat [name, value, ...] as sent, repeats kept. */
  onHead(status: number, reason: string, rawHeaders: string[]): void;
  /** Body bytes, de-chunked; a view into the pushed chunk: copy it to keep it past the call if the chunk is reused. */
  onBody(chunk: Buffer): void;
  onEnd(): void;
}

export interface HttpResponseParserOptions {
  /** Limit for the status line + headers (and, separately, for the trailers). Default 16 KiB like Node's. */
  maxHeaderSize?: number;
  /** The request was HEAD: the response has no body whatever its headers say. */
  isHead?: boolean;
  /**
   * The request asked for an Upgrade: a 101 response is followed by the new
   * protocol's bytes, handed to onBody as they come (framing 'upgrade', ended
   * by finish() at the connection's close). Without it a 101 has no body.
   */
  upgrade?: boolean;
}

export const DEFAULT_MAX_HEADER_SIZE = 16 * 1024;

/** How the body of the current response is delimited. */
export type BodyFraming = 'none' | 'length' | 'chunked' | 'close' | 'upgrade';

const S = {
  Head: 0,
  BodyLength: 1,
  BodyClose: 2,
  ChunkSize: 3,
  ChunkSizeWs: 4,
  ChunkExt: 5,
  ChunkSizeLf: 6,
  ChunkData: 7,
  ChunkDataCr: 8,
  ChunkDataLf: 9,
  TrailerStart: 10,
  TrailerName: 11,
  TrailerLine: 12,
  TrailerLineLf: 13,
  TrailerEndLf: 14,
  Done: 15,
  Dead: 16,
} as const;
type StateValue = (typeof S)[keyof typeof S];

const CR = 13;
const LF = 10;
const SP = 32;
const HTAB = 9;

/** RFC 9110 tchar. */
const TOKEN = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~") TOKEN[c.charCodeAt(0)] = 1;
for (let c = 48; c <= 57; c++) TOKEN[c] = 1;
for (let c = 65; c <= 90; c++) TOKEN[c] = 1;
for (let c = 97; c <= 122; c++) TOKEN[c] = 1;
/** field-vchar / SP / HTAB / obs-text: everything but CTLs (NUL, CR, LF, ...) and DEL. */
const FIELD = new Uint8Array(256);
FIELD[HTAB] = 1;
for (let c = 32; c < 127; c++) FIELD[c] = 1;
for (let c = 128; c < 256; c++) FIELD[c] = 1;
/** Hex digit values, -1 for anything else. */
const HEX = new Int8Array(256).fill(-1);
for (let c = 0; c < 10; c++) HEX[48 + c] = c;
for (let c = 0; c < 6; c++) {
  HEX[65 + c] = 10 + c;
  HEX[97 + c] = 10 + c;
}

const MAX_CHUNK_SIZE = 2 ** 48; // 256 TiB: larger sizes are garbage, not data

/** Index just past the blank line that ends a head in buf[from, end), or -1. */
function findHeadEnd(buf: Buffer, from: number, end: number): number {
  let i = from;
  for (;;) {
    const lf = buf.indexOf(LF, i);
    if (lf < 0 || lf + 1 >= end) return -1;
    const next = buf[lf + 1];
    if (next === LF) return lf + 2;
    if (next === CR) {
      if (lf + 2 >= end) return -1;
      if (buf[lf + 2] === LF) return lf + 3;
    }
    i = lf + 1;
  }
}

/** Content-Length: digits, or a list of identical digit strings ("5, 5"); -1 when invalid. */
function parseContentLengthValue(v: string): number {
  let result = -1;
  let i = 0;
  const len = v.length;
  while (i <= len) {
    let n = 0;
    let digits = 0;
    while (i < len && (v.charCodeAt(i) === SP || v.charCodeAt(i) === HTAB)) i++;
    while (i < len) {
      const c = v.charCodeAt(i) - 48;
      if (c < 0 || c > 9) break;
      n = n * 10 + c;
      digits++;
      i++;
    }
    while (i < len && (v.charCodeAt(i) === SP || v.charCodeAt(i) === HTAB)) i++;
    if (digits === 0 || digits > 15) return -1;
    if (result >= 0 && n !== result) return -1;
    result = n;
    if (i === len) return result;
    if (v.charCodeAt(i) !== 44 /* , */) return -1;
    i++;
  }
  return result;
}

/** Last coding of a Transfer-Encoding value, lower-cased. */
function lastCoding(v: string): string {
  const comma = v.lastIndexOf(',');
  return (comma < 0 ? v : v.slice(comma + 1)).trim().toLowerCase();
}

export class HttpResponseParser {
  private readonly handler: HttpResponseHandler;
  private readonly maxHeaderSize: number;
  private readonly isHead: boolean;
  private readonly upgrade: boolean;
  private state: StateValue = S.Head;
  private headBuf: Buffer | null = null;
  private headFill = 0;
  private remaining = 0;
  private chunkDigits = 0;
  private extBytes = 0;
  private trailerBytes = 0;
  private error: HttpResponseError | null = null;
  /** Status of the final response (0 until its head is parsed). */
  statusCode = 0;
  framing: BodyFraming = 'none';
  /** Bytes received after the response ended (e.g. past Content-Length). Never delivered; a proxy must not reuse or trust the connection. */
  excessBytes = 0;

  constructor(handler: HttpResponseHandler, opts: HttpResponseParserOptions = {}) {
    this.handler = handler;
    this.maxHeaderSize = opts.maxHeaderSize ?? DEFAULT_MAX_HEADER_SIZE;
    this.isHead = opts.isHead === true;
    this.upgrade = opts.upgrade === true;
  }

  get failed(): HttpResponseError | null {
    return this.error;
  }

  get done(): boolean {
    return this.state === S.Done;
  }

  /** Bytes held between pushes (only a head split across chunks): never more than maxHeaderSize. */
  get bufferedBytes(): number {
    return this.headFill;
  }

  push(chunk: Buffer): HttpResponseError | null {
    const len = chunk.length;
    let pos = 0;
    while (pos < len) {
      const state = this.state;
      if (state === S.Head) {
        pos = this.pushHead(chunk, pos);
        if (pos < 0) return this.error;
        continue;
      }
      if (state === S.BodyLength || state === S.ChunkData) {
        const n = Math.min(this.remaining, len - pos);
        this.remaining -= n;
        const body = pos === 0 && n === len ? chunk : chunk.subarray(pos, pos + n);
        pos += n;
        this.handler.onBody(body);
        if (this.state !== state) return this.error; // killed by the handler
        if (this.remaining === 0) {
          if (state === S.BodyLength) this.end();
          else this.state = S.ChunkDataCr;
        }
        continue;
      }
      if (state === S.BodyClose) {
        this.handler.onBody(pos === 0 ? chunk : chunk.subarray(pos));
        return this.error;
      }
      if (state === S.Done) {
        this.excessBytes += len - pos;
        return null;
      }
      if (state === S.Dead) return this.error;
      // Chunked framing and trailers: one byte at a time, nothing buffered.
      const c = chunk[pos++];
      switch (state) {
        case S.ChunkSize: {
          const v = HEX[c];
          if (v >= 0) {
            this.remaining = this.remaining * 16 + v;
            if (++this.chunkDigits > 16 || this.remaining > MAX_CHUNK_SIZE) return this.fail('INVALID_CHUNK', 'chunk size too large');
          } else if (this.chunkDigits === 0) {
            return this.fail('INVALID_CHUNK', `invalid chunk size byte 0x${c.toString(16)}`);
          } else if (c === SP || c === HTAB) this.state = S.ChunkSizeWs;
          else if (c === 59 /* ; */) this.state = S.ChunkExt;
          else if (c === CR) this.state = S.ChunkSizeLf;
          else if (c === LF) this.chunkHeaderDone();
          else return this.fail('INVALID_CHUNK', `invalid chunk size byte 0x${c.toString(16)}`);
          break;
        }
        case S.ChunkSizeWs:
          if (c === SP || c === HTAB) break;
          if (c === 59) this.state = S.ChunkExt;
          else if (c === CR) this.state = S.ChunkSizeLf;
          else if (c === LF) this.chunkHeaderDone();
          else return this.fail('INVALID_CHUNK', `invalid byte 0x${c.toString(16)} after chunk size`);
          break;
        case S.ChunkExt:
          if (c === CR) this.state = S.ChunkSizeLf;
          else if (c === LF) this.chunkHeaderDone();
          else if (FIELD[c] === 0) return this.fail('INVALID_CHUNK', `invalid byte 0x${c.toString(16)} in chunk extension`);
          else if (++this.extBytes > this.maxHeaderSize) return this.fail('HEADERS_TOO_LARGE', 'chunk extensions exceed maxHeaderSize');
          break;
        case S.ChunkSizeLf:
          if (c !== LF) return this.fail('INVALID_CHUNK', 'CR without LF in chunk header');
          this.chunkHeaderDone();
          break;
        case S.ChunkDataCr:
          if (c === CR) this.state = S.ChunkDataLf;
          else if (c === LF) this.startChunk();
          else return this.fail('INVALID_CHUNK', 'chunk data longer than its size');
          break;
        case S.ChunkDataLf:
          if (c !== LF) return this.fail('INVALID_CHUNK', 'CR without LF after chunk data');
          this.startChunk();
          break;
        case S.TrailerStart:
          if (c === CR) this.state = S.TrailerEndLf;
          else if (c === LF) this.end();
          else if (TOKEN[c] === 0) return this.fail('INVALID_HEADER', `invalid byte 0x${c.toString(16)} in trailer name`);
          else {
            this.state = S.TrailerName;
            if (++this.trailerBytes > this.maxHeaderSize) return this.fail('HEADERS_TOO_LARGE', 'trailers exceed maxHeaderSize');
          }
          break;
        case S.TrailerName:
          if (c === 58 /* : */) this.state = S.TrailerLine;
          else if (TOKEN[c] === 0) return this.fail('INVALID_HEADER', `invalid byte 0x${c.toString(16)} in trailer name`);
          if (++this.trailerBytes > this.maxHeaderSize) return this.fail('HEADERS_TOO_LARGE', 'trailers exceed maxHeaderSize');
          break;
        case S.TrailerLine:
          if (c === CR) this.state = S.TrailerLineLf;
          else if (c === LF) this.state = S.TrailerStart;
          else if (FIELD[c] === 0) return this.fail('INVALID_HEADER', `invalid byte 0x${c.toString(16)} in trailer`);
          else if (++this.trailerBytes > this.maxHeaderSize) return this.fail('HEADERS_TOO_LARGE', 'trailers exceed maxHeaderSize');
          break;
        case S.TrailerLineLf:
          if (c !== LF) return this.fail('INVALID_HEADER', 'CR without LF in trailer');
          this.state = S.TrailerStart;
          break;
        case S.TrailerEndLf:
          if (c !== LF) return this.fail('INVALID_HEADER', 'CR without LF after trailers');
          this.end();
          break;
      }
      if (this.state === S.Dead) return this.error;
    }
    return null;
  }

  /** The upstream closed the connection (EOF). Ends a close-delimited body; anything unfinished is TRUNCATED. */
  finish(): HttpResponseError | null {
    switch (this.state) {
      case S.Done:
        return null;
      case S.Dead:
        return this.error;
      case S.BodyClose:
        this.end();
        return this.error;
      case S.Head:
        return this.fail('TRUNCATED', this.headFill === 0 ? 'connection closed before a response' : 'connection closed inside the response head');
      default:
        return this.fail('TRUNCATED', 'connection closed inside the response body');
    }
  }

  /** Stops parsing (e.g. the client went away); later calls return `err`. */
  kill(err: HttpResponseError = new HttpResponseError('TRUNCATED', 'aborted')): void {
    this.state = S.Dead;
    this.headBuf = null;
    this.headFill = 0;
    this.error = err;
  }

  // -------------------------------------------------------------- head

  /** Consumes head bytes from chunk[pos..]; returns the new position, or -1 after an error. */
  private pushHead(chunk: Buffer, pos: number): number {
    const len = chunk.length;
    if (this.headFill === 0) {
      const end = findHeadEnd(chunk, pos, len);
      if (end >= 0) {
        if (end - pos > this.maxHeaderSize) return this.failHead('HEADERS_TOO_LARGE', `response head exceeds ${this.maxHeaderSize} bytes`);
        // Zero copy: the whole head is in this chunk.
        if (!this.parseHead(chunk, pos, end)) return -1;
        return end;
      }
      if (len - pos > this.maxHeaderSize) return this.failHead('HEADERS_TOO_LARGE', `response head exceeds ${this.maxHeaderSize} bytes`);
      this.appendHead(chunk, pos, len);
      return len;
    }
    const before = this.headFill;
    const take = Math.min(this.maxHeaderSize - before, len - pos);
    this.appendHead(chunk, pos, pos + take);
    const buf = this.headBuf!;
    const end = findHeadEnd(buf, Math.max(0, before - 2), this.headFill);
    if (end < 0) {
      if (this.headFill >= this.maxHeaderSize) return this.failHead('HEADERS_TOO_LARGE', `response head exceeds ${this.maxHeaderSize} bytes`);
      return pos + take;
    }
    this.headFill = 0;
    if (!this.parseHead(buf, 0, end)) return -1;
    if (this.state === S.Head) this.headBuf = buf; // keep the buffer for the final head after a 1xx
    return pos + (end - before);
  }

  private appendHead(src: Buffer, start: number, end: number): void {
    const need = this.headFill + (end - start);
    let buf = this.headBuf;
    if (buf === null || buf.length < need) {
      const grown = Buffer.allocUnsafe(Math.min(this.maxHeaderSize, Math.max(need, buf ? buf.length * 2 : 1024)));
      if (buf) buf.copy(grown, 0, 0, this.headFill);
      this.headBuf = buf = grown;
    }
    src.copy(buf, this.headFill, start, end);
    this.headFill = need;
  }

  private failHead(kind: HttpResponseErrorKind, message: string): -1 {
    this.fail(kind, message);
    return -1;
  }

  /** Parses the head in buf[start, end) (end is just past the blank line) and sets up body framing. */
  private parseHead(buf: Buffer, start: number, end: number): boolean {
    let ls = start;
    let status = 0;
    let reason = '';
    let cgi = false;
    const rawHeaders: string[] = [];
    let contentLength = -1;
    let chunked = false;
    let transferEncoding = false;
    let location = false;

    // Status line, or CGI mode when the first line is already a header.
    let lf = buf.indexOf(LF, ls);
    let le = lf > ls && buf[lf - 1] === CR ? lf - 1 : lf;
    if (le - ls >= 5 && buf[ls] === 72 && buf[ls + 1] === 84 && buf[ls + 2] === 84 && buf[ls + 3] === 80 && buf[ls + 4] === 47) {
      // "HTTP/1.x NNN[ reason]"
      if (
        le - ls < 12 ||
        buf[ls + 5] !== 49 ||
        buf[ls + 6] !== 46 ||
        buf[ls + 7] < 48 ||
        buf[ls + 7] > 57 ||
        buf[ls + 8] !== SP
      ) {
        return this.bad('INVALID_STATUS', 'invalid status line');
      }
      status = this.statusDigits(buf, ls + 9);
      if (status < 0 || (le - ls > 12 && buf[ls + 12] !== SP)) return this.bad('INVALID_STATUS', 'invalid status code');
      for (let i = ls + 13; i < le; i++) if (FIELD[buf[i]] === 0) return this.bad('INVALID_STATUS', 'invalid byte in reason phrase');
      reason = le - ls > 13 ? buf.latin1Slice(ls + 13, le) : '';
      ls = lf + 1;
    } else {
      cgi = true;
    }

    // Header lines up to the blank line.
    for (;;) {
      lf = buf.indexOf(LF, ls);
      le = lf > ls && buf[lf - 1] === CR ? lf - 1 : lf;
      if (le === ls) break; // blank line: end of head
      if (lf >= end) return this.bad('INVALID_HEADER', 'head overruns its end'); // unreachable by findHeadEnd
      let i = ls;
      while (i < le && TOKEN[buf[i]] === 1) i++;
      if (i === ls || i === le || buf[i] !== 58 /* : */) {
        return this.bad('INVALID_HEADER', i === ls && (buf[i] === SP || buf[i] === HTAB) ? 'obsolete line folding' : 'invalid header name');
      }
      const nameEnd = i;
      i++;
      while (i < le && (buf[i] === SP || buf[i] === HTAB)) i++;
      let ve = le;
      while (ve > i && (buf[ve - 1] === SP || buf[ve - 1] === HTAB)) ve--;
      for (let j = i; j < ve; j++) if (FIELD[buf[j]] === 0) return this.bad('INVALID_HEADER', 'invalid byte in header value');
      const name = buf.latin1Slice(ls, nameEnd);
      const value = ve > i ? buf.latin1Slice(i, ve) : '';
      ls = lf + 1;
      const nlen = name.length;
      if (nlen === 14 && name.toLowerCase() === 'content-length') {
        const n = parseContentLengthValue(value);
        if (n < 0 || (contentLength >= 0 && n !== contentLength)) return this.bad('INVALID_CONTENT_LENGTH', `invalid Content-Length ${JSON.stringify(value.slice(0, 32))}`);
        contentLength = n;
      } else if (nlen === 17 && name.toLowerCase() === 'transfer-encoding') {
        transferEncoding = true;
        chunked = lastCoding(value) === 'chunked';
      } else if (nlen === 8 && name.toLowerCase() === 'location') {
        location = true;
      } else if (cgi && nlen === 6 && status === 0 && name.toLowerCase() === 'status') {
        status = value.length >= 3 ? this.statusDigits(buf, i) : -1;
        if (status < 0 || (value.length > 3 && value.charCodeAt(3) !== SP)) return this.bad('INVALID_STATUS', `invalid Status header ${JSON.stringify(value.slice(0, 32))}`);
        reason = value.slice(4);
        continue; // CGI's Status is not an HTTP header
      }
      rawHeaders.push(name, value);
    }
    if (status === 0) status = location ? 302 : 200; // CGI without Status
    // Both framings at once (RFC 9112 §6.3 "ought to be handled as an error"): whichever one a
    // proxy trusts, a client trusting the other reads a different message; undici refuses it too.
    if (transferEncoding && contentLength >= 0) return this.bad('INVALID_CONTENT_LENGTH', 'Content-Length together with Transfer-Encoding');

    if (status < 200 && status !== 101) return true; // interim response: the final head follows
    this.statusCode = status;
    this.headBuf = null;
    let framing: BodyFraming;
    if (status === 101 && this.upgrade) framing = 'upgrade';
    else if (this.isHead || status === 204 || status === 304 || status < 200) framing = 'none';
    else if (transferEncoding) framing = chunked ? 'chunked' : 'close';
    else if (contentLength >= 0) framing = contentLength === 0 ? 'none' : 'length';
    else framing = 'close';
    this.framing = framing;
    if (framing === 'length') {
      this.remaining = contentLength;
      this.state = S.BodyLength;
    } else if (framing === 'chunked') {
      this.startChunk();
    } else if (framing === 'close' || framing === 'upgrade') {
      this.state = S.BodyClose;
    } else {
      this.state = S.Done;
    }
    this.handler.onHead(status, reason, rawHeaders);
    if ((this.state as StateValue) === S.Dead) return false; // the handler killed us
    if (framing === 'none') this.handler.onEnd();
    return this.state !== S.Dead;
  }

  /** Three ASCII digits at buf[at] as a status 100–599, else -1. */
  private statusDigits(buf: Buffer, at: number): number {
    const a = buf[at] - 48;
    const b = buf[at + 1] - 48;
    const c = buf[at + 2] - 48;
    if (!(a >= 1 && a <= 5 && b >= 0 && b <= 9 && c >= 0 && c <= 9)) return -1;
    return a * 100 + b * 10 + c;
  }

  // -------------------------------------------------------------- body

  private startChunk(): void {
    this.state = S.ChunkSize;
    this.remaining = 0;
    this.chunkDigits = 0;
    this.extBytes = 0;
  }

  private chunkHeaderDone(): void {
    if (this.remaining === 0) {
      this.state = S.TrailerStart;
      this.trailerBytes = 0;
    } else {
      this.state = S.ChunkData;
    }
  }

  private end(): void {
    this.state = S.Done;
    this.handler.onEnd();
  }

  private bad(kind: HttpResponseErrorKind, message: string): false {
    this.fail(kind, message);
    return false;
  }

  private fail(kind: HttpResponseErrorKind, message: string): HttpResponseError {
    this.kill(new HttpResponseError(kind, message));
    return this.error!;
  }
}
