// uwsgi classic: the request packet NGINX's `uwsgi_pass` and Apache's
// mod_proxy_uwsgi send, and the CGI vars mapping between HTTP and vars.
//
// Hand-written because it is the codec itself (no npm library speaks uwsgi).
// A packet is `modifier1 u8 | datasize u16le | modifier2 u8`, then `datasize`
// bytes of vars, then the raw request body, framed only by CONTENT_LENGTH.
// One request per connection: the response is raw HTTP (see http-response.ts)
// and the connection closes after it.
import { MAX_VARS_SIZE, UWSGI_HEADER_SIZE, UWSGI_MODIFIER1_WSGI } from './constants.ts';
import { type ProtocolError, protocolError } from './errors.ts';
import { decodeVars, type Vars, varsSize, writeVars } from './vars.ts';

// ---------------------------------------------------------------- encoding

/** Header + vars of a uwsgi request packet in one Buffer; the caller sends the body raw after it. */
export function encodeUwsgiRequest(vars: Vars, modifier1: number = UWSGI_MODIFIER1_WSGI, modifier2 = 0): Buffer | ProtocolError {
  if (vars.length % 2 !== 0) return protocolError('PROTOCOL_ERROR', 'vars must be name/value pairs');
  const size = varsSize(vars);
  if (size < 0 || size > MAX_VARS_SIZE) {
    return protocolError('VARS_TOO_LARGE', `uwsgi vars of ${size < 0 ? 'over 65535' : size} bytes exceed ${MAX_VARS_SIZE}`);
  }
  const buf = Buffer.allocUnsafe(UWSGI_HEADER_SIZE + size);
  buf[0] = modifier1 & 0xff;
  buf[1] = size & 0xff;
  buf[2] = size >>> 8;
  buf[3] = modifier2 & 0xff;
  writeVars(buf, UWSGI_HEADER_SIZE, vars);
  return buf;
}

// ---------------------------------------------------------------- decoding

export interface UwsgiRequestHandler {
  /** The vars block has been decoded; body bytes (if any) follow through onBody. */
  onRequest(vars: Vars, modifier1: number, modifier2: number): void;
  /** A piece of the body: a view into the pushed chunk (zero copy): copy it to keep it past the call if the chunk is reused. */
  onBody(chunk: Buffer): void;
  /** All CONTENT_LENGTH bytes have arrived. */
  onEnd(): void;
}

export interface UwsgiDecoderOptions {
  /** CONTENT_LENGTH above this is refused with BODY_TOO_LARGE before any body byte is read. Default: unlimited. */
  maxBody?: number;
  /** datasize above this is refused with VARS_TOO_LARGE before the vars are buffered. Default and maximum: MAX_VARS_SIZE. */
  maxVarsSize?: number;
}

// Decoder states (plain numbers: cheapest to compare on the hot path).
const UState = { Header: 0, Vars: 1, Body: 2, Done: 3, Dead: 4 } as const;
type UStateValue = (typeof UState)[keyof typeof UState];

/**
 * Parses a CONTENT_LENGTH var: empty means 0; anything but 1–15 ASCII digits
 * (no sign, no spaces, at most 999 TB) is invalid and returns -1.
 */
export function parseContentLength(value: string): number {
  const len = value.length;
  if (len === 0) return 0;
  if (len > 15) return -1;
  let n = 0;
  for (let i = 0; i < len; i++) {
    const c = value.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return -1;
    n = n * 10 + c;
  }
  return n;
}

/**
 * Incremental decoder for one uwsgi classic request (the appserver side).
 * push() never throws: it returns null or the ProtocolError that ends the
 * connection (the same error forever after). The body is framed by
 * CONTENT_LENGTH only: HTTP_TRANSFER_ENCODING is ignored because NGINX
 * forwards the client's header even after it has de-chunked the body. Bytes
 * past CONTENT_LENGTH are a PROTOCOL_ERROR (one request per connection):
 * the body up to CONTENT_LENGTH and onEnd() are delivered first.
 */
export class UwsgiRequestDecoder {
  private readonly handler: UwsgiRequestHandler;
  private readonly maxBody: number;
  private readonly maxVarsSize: number;
  /** The 4-byte header when it arrives split across chunks (rare: allocated then). */
  private header: Buffer | null = null;
  private headerFill = 0;
  private state: UStateValue = UState.Header;
  private modifier1 = 0;
  private modifier2 = 0;
  private datasize = 0;
  private varsBuf: Buffer | null = null;
  private varsFill = 0;
  private remaining = 0;
  private error: ProtocolError | null = null;
  /** The decoded vars (null until the vars block is complete), e.g. to answer 413 after BODY_TOO_LARGE. */
  vars: Vars | null = null;
  /** CONTENT_LENGTH of the request (valid once vars is set). */
  contentLength = 0;

  constructor(handler: UwsgiRequestHandler, opts: UwsgiDecoderOptions = {}) {
    this.handler = handler;
    this.maxBody = opts.maxBody ?? Number.MAX_SAFE_INTEGER;
    this.maxVarsSize = Math.min(opts.maxVarsSize ?? MAX_VARS_SIZE, MAX_VARS_SIZE);
  }

  get failed(): ProtocolError | null {
    return this.error;
  }

  /** True once the whole request (vars and body) has been delivered. */
  get done(): boolean {
    return this.state === UState.Done;
  }

  /** Bytes held by the decoder between pushes (bounded by 4 + maxVarsSize). */
  get bufferedBytes(): number {
    return this.headerFill + (this.varsBuf ? this.varsBuf.length : 0);
  }

  push(chunk: Buffer): ProtocolError | null {
    if (this.state === UState.Dead) return this.error;
    let pos = 0;
    const len = chunk.length;
    while (pos < len) {
      switch (this.state) {
        case UState.Header: {
          if (this.headerFill === 0 && len - pos >= UWSGI_HEADER_SIZE) {
            this.modifier1 = chunk[pos];
            this.datasize = chunk[pos + 1] | (chunk[pos + 2] << 8);
            this.modifier2 = chunk[pos + 3];
            pos += UWSGI_HEADER_SIZE;
          } else {
            const header = (this.header ??= Buffer.allocUnsafe(UWSGI_HEADER_SIZE));
            const n = Math.min(UWSGI_HEADER_SIZE - this.headerFill, len - pos);
            chunk.copy(header, this.headerFill, pos, pos + n);
            this.headerFill += n;
            pos += n;
            if (this.headerFill < UWSGI_HEADER_SIZE) return null;
            this.headerFill = 0;
            this.modifier1 = header[0];
            this.datasize = header[1] | (header[2] << 8);
            this.modifier2 = header[3];
          }
          if (this.datasize > this.maxVarsSize) {
            return this.fail(protocolError('VARS_TOO_LARGE', `uwsgi datasize ${this.datasize} exceeds ${this.maxVarsSize}`));
          }
          if (len - pos >= this.datasize) {
            // Zero copy: the whole vars block is in this chunk.
            const err = this.vardone(chunk, pos, pos + this.datasize);
            pos += this.datasize;
            if (err) return err;
          } else {
            this.varsBuf = Buffer.allocUnsafe(this.datasize);
            this.varsFill = 0;
            this.state = UState.Vars;
          }
          break;
        }
        case UState.Vars: {
          const buf = this.varsBuf!;
          const n = Math.min(this.datasize - this.varsFill, len - pos);
          chunk.copy(buf, this.varsFill, pos, pos + n);
          this.varsFill += n;
          pos += n;
          if (this.varsFill === this.datasize) {
            this.varsBuf = null;
            const err = this.vardone(buf, 0, buf.length);
            if (err) return err;
          }
          break;
        }
        case UState.Body: {
          const n = Math.min(this.remaining, len - pos);
          this.remaining -= n;
          const body = pos === 0 && n === len ? chunk : chunk.subarray(pos, pos + n);
          pos += n;
          this.handler.onBody(body);
          if (this.state !== UState.Body) return this.error; // the handler killed us
          if (this.remaining === 0) this.finishRequest();
          break;
        }
        case UState.Done:
          return this.fail(protocolError('PROTOCOL_ERROR', `${len - pos} bytes past CONTENT_LENGTH (uwsgi carries one request per connection)`));
        default:
          return this.error;
      }
    }
    return null;
  }

  /** Stops decoding; later push() calls return `err`. */
  kill(err: ProtocolError = protocolError('CANCEL', 'connection closed')): void {
    this.fail(err);
  }

  private vardone(buf: Buffer, start: number, end: number): ProtocolError | null {
    const vars = decodeVars(buf, start, end);
    if (!Array.isArray(vars)) return this.fail(vars);
    let contentLength = -2;
    for (let i = 0; i < vars.length; i += 2) {
      if (vars[i] !== 'CONTENT_LENGTH') continue;
      const n = parseContentLength(vars[i + 1]);
      if (n < 0) return this.fail(protocolError('PROTOCOL_ERROR', `invalid CONTENT_LENGTH ${JSON.stringify(vars[i + 1].slice(0, 32))}`));
      if (contentLength !== -2 && n !== contentLength) return this.fail(protocolError('PROTOCOL_ERROR', 'conflicting CONTENT_LENGTH vars'));
      contentLength = n;
    }
    if (contentLength < 0) contentLength = 0;
    this.vars = vars;
    this.contentLength = contentLength;
    if (contentLength > this.maxBody) {
      return this.fail(protocolError('BODY_TOO_LARGE', `CONTENT_LENGTH ${contentLength} exceeds the limit of ${this.maxBody} bytes`));
    }
    this.remaining = contentLength;
    this.state = UState.Body;
    this.handler.onRequest(vars, this.modifier1, this.modifier2);
    if (this.state !== UState.Body) return this.error;
    if (contentLength === 0) this.finishRequest();
    return null;
  }

  private finishRequest(): void {
    this.state = UState.Done;
    this.handler.onEnd();
  }

  private fail(err: ProtocolError): ProtocolError {
    this.state = UState.Dead;
    this.varsBuf = null;
    this.headerFill = 0;
    this.error = err;
    return err;
  }
}

// ---------------------------------------------------------------- HTTP ⇄ CGI vars

/** What varsFromHttpRequest needs to know about an HTTP request (node:http / Fastify raw request fields). */
export interface HttpRequestInfo {
  method: string;
  /** The request target as received (origin-form "/path?query", or absolute-form). */
  url: string;
  /** "1.1", "1.0" (IncomingMessage.httpVersion). */
  httpVersion: string;
  /** Flat [name, value, ...] as IncomingMessage.rawHeaders (any case, repeats kept). */
  rawHeaders: string[];
  remoteAddress: string;
  remotePort: number | string;
  serverName: string;
  serverPort: number | string;
  /** "http" or "https". */
  scheme: string;
  /** Overrides CONTENT_LENGTH, e.g. when the caller has buffered a chunked body; default: the Content-Length header or "". */
  contentLength?: number | string;
  /** The mount point the proxy stripped from the path (strip_prefix): SCRIPT_NAME, as `uwsgi_param SCRIPT_NAME` sets it. */
  scriptName?: string;
}

// Name transforms are cached because the same few dozen header names recur on
// every request; the cache is bounded so hostile names cannot grow it.
const NAME_CACHE_LIMIT = 1024;
const toVarCache = new Map<string, string>();
const toHeaderCache = new Map<string, string>();

/** "User-Agent" → "HTTP_USER_AGENT" (NGINX: upper case, '-' → '_'). */
export function headerToVarName(name: string): string {
  let v = toVarCache.get(name);
  if (v === undefined) {
    v = `HTTP_${name.toUpperCase().replaceAll('-', '_')}`;
    if (toVarCache.size < NAME_CACHE_LIMIT) toVarCache.set(name, v);
  }
  return v;
}

/** "HTTP_USER_AGENT" → "user-agent" (the inverse; only called for names starting with HTTP_). */
export function varNameToHeader(varName: string): string {
  let h = toHeaderCache.get(varName);
  if (h === undefined) {
    h = varName.slice(5).toLowerCase().replaceAll('_', '-');
    if (toHeaderCache.size < NAME_CACHE_LIMIT) toHeaderCache.set(varName, h);
  }
  return h;
}

function hasUnderscore(s: string): boolean {
  return s.indexOf('_') !== -1;
}

function isCookieVar(v: string): boolean {
  return v === 'HTTP_COOKIE';
}

/** Appends name/value to out, joining with an earlier pair of the same name (", ", or "; " for Cookie). */
function appendJoined(out: string[], from: number, name: string, value: string, cookie: boolean, index: Map<string, number> | null): void {
  let at = -1;
  if (index) {
    at = index.get(name) ?? -1;
  } else {
    for (let j = from; j < out.length; j += 2) {
      if (out[j] === name) {
        at = j;
        break;
      }
    }
  }
  if (at < 0) {
    index?.set(name, out.length);
    out.push(name, value);
  } else {
    out[at + 1] = `${out[at + 1]}${cookie ? '; ' : ', '}${value}`;
  }
}

function hexVal(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  c |= 0x20;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

/**
 * NGINX's $document_uri from the path of a request target: %XX decoded to
 * bytes (kept as latin1 code units, like every var), slashes merged, "." and
 * ".." segments resolved (".." never climbs above "/"). An invalid escape is
 * kept literally (NGINX would answer 400 before forwarding).
 */
export function documentUri(path: string): string {
  let needsWork = false;
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c === 37 /* % */) {
      needsWork = true;
      break;
    }
    if (c === 47 /* / */ && i + 1 < path.length) {
      const n = path.charCodeAt(i + 1);
      if (n === 47 || n === 46 /* . */) {
        needsWork = true;
        break;
      }
    }
  }
  if (!needsWork) return path;
  let decoded = '';
  let last = 0;
  for (let i = 0; i < path.length; i++) {
    if (path.charCodeAt(i) !== 37 || i + 2 >= path.length) continue;
    const hi = hexVal(path.charCodeAt(i + 1));
    const lo = hexVal(path.charCodeAt(i + 2));
    if (hi < 0 || lo < 0) continue;
    decoded += path.slice(last, i) + String.fromCharCode((hi << 4) | lo);
    last = i + 3;
    i += 2;
  }
  decoded += path.slice(last);
  const absolute = decoded.charCodeAt(0) === 47;
  const out: string[] = [];
  const segments = decoded.split('/');
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i];
    if (s === '' || s === '.') {
      if (i === segments.length - 1 && (s === '.' || i > 0)) out.push('');
      continue;
    }
    if (s === '..') {
      out.pop();
      if (i === segments.length - 1) out.push('');
      continue;
    }
    out.push(s);
  }
  const joined = out.join('/');
  return absolute ? `/${joined}` : joined;
}

/**
 * The vars NGINX's stock uwsgi_params sends for an HTTP request, in that
 * file's order, then every header as HTTP_<NAME>. Headers whose name holds an
 * underscore are dropped, as NGINX does by default (underscores_in_headers
 * off), so "X_Forwarded_For" can never pose as "X-Forwarded-For". Repeated
 * headers are joined with ", " (Cookie with "; ") as NGINX ≥ 1.23 does.
 */
export function varsFromHttpRequest(req: HttpRequestInfo): Vars {
  const url = req.url;
  let pathStart = 0;
  if (url.charCodeAt(0) !== 47 /* / */) {
    // absolute-form: skip "scheme://authority"
    const scheme = url.indexOf('://');
    if (scheme > 0) {
      const slash = url.indexOf('/', scheme + 3);
      pathStart = slash < 0 ? url.length : slash;
    }
  }
  const q = url.indexOf('?', pathStart);
  const path = q < 0 ? url.slice(pathStart) : url.slice(pathStart, q);
  const query = q < 0 ? '' : url.slice(q + 1);

  const raw = req.rawHeaders;
  let contentType = '';
  let contentLength = '';
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i];
    if (n.length === 12 && contentType === '' && n.toLowerCase() === 'content-type') contentType = raw[i + 1];
    else if (n.length === 14 && contentLength === '' && n.toLowerCase() === 'content-length') contentLength = raw[i + 1];
  }
  if (req.contentLength !== undefined) contentLength = String(req.contentLength);
  const https = req.scheme === 'https';

  const out: Vars = [
    'QUERY_STRING',
    query,
    'REQUEST_METHOD',
    req.method,
    'CONTENT_TYPE',
    contentType,
    'CONTENT_LENGTH',
    contentLength,
    'REQUEST_URI',
    url,
    'PATH_INFO',
    documentUri(path === '' ? '/' : path),
    'SERVER_PROTOCOL',
    `HTTP/${req.httpVersion}`,
    'REQUEST_SCHEME',
    req.scheme,
  ];
  if (https) out.push('HTTPS', 'on');
  if (req.scriptName !== undefined && req.scriptName !== '') out.push('SCRIPT_NAME', req.scriptName);
  out.push(
    'REMOTE_ADDR',
    req.remoteAddress,
    'REMOTE_PORT',
    String(req.remotePort),
    'SERVER_PORT',
    String(req.serverPort),
    'SERVER_NAME',
    req.serverName,
  );
  const from = out.length;
  const index = raw.length > 64 ? new Map<string, number>() : null;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    if (hasUnderscore(name)) continue;
    const v = headerToVarName(name);
    appendJoined(out, from, v, raw[i + 1], isCookieVar(v), index);
  }
  return out;
}

/**
 * The inverse, for the appserver: HTTP_* vars back to a flat rawHeaders list
 * (lower-case names, '_' → '-'). Repeated HTTP_* vars (older NGINX sends
 * repeated headers as repeated vars) are joined like varsFromHttpRequest
 * joins them. content-type comes from CONTENT_TYPE when it is non-empty,
 * content-length only from CONTENT_LENGTH (the body framing the decoder
 * used); HTTP_CONTENT_LENGTH and HTTP_TRANSFER_ENCODING are dropped because
 * the body handed to the application is exactly CONTENT_LENGTH raw bytes.
 */
export function httpHeadersFromVars(vars: Vars): string[] {
  let contentType = '';
  let contentLength = '';
  let count = 0;
  for (let i = 0; i < vars.length; i += 2) {
    const k = vars[i];
    if (k === 'CONTENT_TYPE') {
      if (contentType === '') contentType = vars[i + 1];
    } else if (k === 'CONTENT_LENGTH') {
      if (contentLength === '') contentLength = vars[i + 1];
    } else if (k.startsWith('HTTP_')) count++;
  }
  const out: string[] = [];
  const index = count > 32 ? new Map<string, number>() : null;
  for (let i = 0; i < vars.length; i += 2) {
    const k = vars[i];
    if (k.length <= 5 || !k.startsWith('HTTP_')) continue;
    if (k === 'HTTP_CONTENT_LENGTH' || k === 'HTTP_TRANSFER_ENCODING') continue;
    if (k === 'HTTP_CONTENT_TYPE') {
      if (contentType !== '') continue;
    }
    appendJoined(out, 0, varNameToHeader(k), vars[i + 1], isCookieVar(k), index);
  }
  if (contentType !== '') out.push('content-type', contentType);
  if (contentLength !== '') out.push('content-length', contentLength);
  return out;
}
