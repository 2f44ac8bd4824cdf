// The proxy's log: pino, written through pino's own buffered asynchronous
// destination (SonicBoom with sync: false): lines collect in memory and leave
// in large writes, off the request's path. NGINX's `access_log ... buffer=
// flush=` does the same, for the same reason: with a synchronous write per
// line the access log cost 10-40 % of the proxy's CPU. Nothing is lost on a
// graceful stop: the buffer is flushed every log.flush_interval, on SIGHUP, and
// synchronously on SIGTERM/SIGINT (after the last request) and at exit.
import pino, { type Logger } from 'pino';
import type { ProxyExchange } from './exchange.ts';

const { streamSym, chindingsSym } = pino.symbols;

/**
 * Bytes buffered before a write; a whole access line is about 250. Each write of the asynchronous
 * destination is a round trip through libuv's thread pool (a pool thread woken, the write, the
 * loop woken back): 8 KiB made that ~900 times a second on hello at 30k req/s. Larger is not
 * better: SonicBoom copies each write into a new Buffer once it is written and keeps that copy
 * until its next write, so a batch that takes longer to fill than two scavenges are apart gets
 * its copy promoted, and with 64 KiB the proxy ran a mark-compact about every second (pauses of
 * 3-9 ms: p99 7.2 against 3.7 ms on hello, 8 interleaved rounds). 16 KiB (64 lines) halves the
 * round trips and stays young, unless a request leaves over 50 KB of garbage. At most this much
 * waits for log.flush_interval, and a graceful stop writes it.
 */
const BUFFER_BYTES = 16 * 1024;

/**
 * Access lines written into one buffer as they come and handed to the destination as one string
 * once it is full (and on every flush). Two things this avoids: SonicBoom appends each write to a
 * string and measures that string's byte length first, which flattens it (line by line, every
 * line copied the whole buffer collected so far); and lines kept as strings until the write (a
 * template's rope of a few dozen pieces each, 64 lines per batch) survive scavenges and are
 * copied and promoted by the GC, where bytes in a buffer are not looked at.
 */
class AccessBatch {
  private readonly buf = Buffer.allocUnsafeSlow(BUFFER_BYTES);
  private used = 0;
  private readonly dest: { write(s: string): unknown };
  constructor(dest: { write(s: string): unknown }) {
    this.dest = dest;
  }
  add(line: string): void {
    // UTF-8 takes at most 3 bytes per UTF-16 code unit
    const most = 3 * line.length;
    if (this.used + most > BUFFER_BYTES) {
      this.drain();
      if (most > BUFFER_BYTES) {
        this.dest.write(line);
        return;
      }
    }
    this.used += this.buf.write(line, this.used);
  }
  drain(): void {
    if (this.used === 0) return;
    const text = this.buf.toString('utf8', 0, this.used);
    this.used = 0;
    this.dest.write(text);
  }

  private chindings = '';
  private chindingsBytes: Buffer = Buffer.alloc(0);

  /**
   * Writes the access line logAccess's template builds, byte for byte, straight into the buffer:
   * no rope of strings, no flattening and no UTF-8 pass over the whole line (perf: those were
   * most of what the line cost). False when the line may not fit in a batch (the caller then
   * writes the template's string).
   */
  accessLine(chindings: string, reqId: string, method: string, path: string, status: number, bytes: number, upstream: string, upstreamMs: number, ms: number, error: string | null): boolean {
    // JSON escapes take at most 6 bytes per code unit, UTF-8 at most 3; numbers at most 24
    const most = 200 + 3 * chindings.length + 6 * (reqId.length + method.length + path.length + upstream.length + (error === null ? 0 : error.length));
    if (most > BUFFER_BYTES) return false;
    if (this.used + most > BUFFER_BYTES) this.drain();
    if (chindings !== this.chindings) {
      this.chindings = chindings;
      this.chindingsBytes = Buffer.from(chindings, 'utf8');
    }
    const buf = this.buf;
    let p = ascii(buf, this.used, '{"level":30,"time":');
    p = integer(buf, p, Date.now());
    const cb = this.chindingsBytes;
    for (let i = 0; i < cb.length; i++) buf[p++] = cb[i];
    p = ascii(buf, p, ',"reqId":');
    p = json(buf, p, reqId);
    p = ascii(buf, p, ',"method":');
    p = json(buf, p, method);
    p = ascii(buf, p, ',"path":');
    p = json(buf, p, path);
    p = ascii(buf, p, ',"status":');
    p = integer(buf, p, status);
    p = ascii(buf, p, ',"bytes":');
    p = integer(buf, p, bytes);
    p = ascii(buf, p, ',"upstream":');
    p = json(buf, p, upstream);
    p = ascii(buf, p, ',"upstream_ms":');
    p = upstreamMs < 0 ? ascii(buf, p, 'null') : hundredths(buf, p, upstreamMs);
    p = ascii(buf, p, ',"ms":');
    p = hundredths(buf, p, ms);
    if (error !== null) {
      p = ascii(buf, p, ',"error":');
      p = json(buf, p, error);
    }
    this.used = ascii(buf, p, ',"msg":"access"}\n');
    return true;
  }
}

/** Writes the ASCII string `s` at `p`; returns the offset after it. */
function ascii(buf: Buffer, p: number, s: string): number {
  for (let i = 0; i < s.length; i++) buf[p++] = s.charCodeAt(i);
  return p;
}

/** Writes String(n) at `p`. */
function integer(buf: Buffer, p: number, n: number): number {
  if (!(Number.isSafeInteger(n) && n >= 0)) return ascii(buf, p, String(n));
  let digits = 1;
  for (let m = n; m >= 10; m = Math.floor(m / 10)) digits++;
  const end = p + digits;
  let m = n;
  for (let i = end - 1; i >= p; i--) {
    buf[i] = 48 + (m % 10);
    m = Math.floor(m / 10);
  }
  return end;
}

/**
 * Writes String(Math.round(x * 100) / 100) at `p`. For c = Math.round(x * 100) below 1e15 that is
 * c / 100 in decimals without trailing zeros: fewer digits would name another double.
 */
function hundredths(buf: Buffer, p: number, x: number): number {
  const c = Math.round(x * 100);
  if (!(c >= 0 && c < 1e15)) return ascii(buf, p, String(c / 100));
  const frac = c % 100;
  p = integer(buf, p, (c - frac) / 100);
  if (frac === 0) return p;
  buf[p++] = 46; // .
  buf[p++] = 48 + Math.floor(frac / 10);
  if (frac % 10 !== 0) buf[p++] = 48 + (frac % 10);
  return p;
}

/** Writes JSON.stringify(s) at `p` (jsonString's rule: printable ASCII as it is, anything else through JSON.stringify). */
function json(buf: Buffer, p: number, s: string): number {
  const start = p;
  buf[p++] = 34; // "
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) return start + buf.write(JSON.stringify(s), start);
    buf[p++] = c;
  }
  buf[p++] = 34;
  return p;
}

/** The batch of each destination createProxyLog made (other loggers get each line as it comes). */
const batches = new WeakMap<object, AccessBatch>();

export interface ProxyLog {
  log: Logger;
  /** Asynchronous flush (SIGHUP, periodic). */
  flush(): void;
  /** Synchronous flush: what is buffered is written before this returns (stop, exit). */
  flushSync(): void;
}

/** The proxy process's logger on stdout (`fd` for tests), buffered. */
export function createProxyLog(level: string, flushIntervalMs: number, fd = 1): ProxyLog {
  // SonicBoom refuses a minLength that is not below maxWrite (16 KiB by default)
  const dest = pino.destination({ dest: fd, sync: false, minLength: BUFFER_BYTES, maxWrite: 2 * BUFFER_BYTES });
  const log = pino({ level, base: { name: 'gatewire-proxy', pid: process.pid } }, dest);
  const batch = new AccessBatch(dest);
  batches.set(dest, batch);
  const flush = () => {
    try {
      batch.drain();
      dest.flush();
    } catch {
      // not ready yet (the fd opens asynchronously): the next tick writes it
    }
  };
  const flushSync = () => {
    try {
      batch.drain();
      dest.flushSync();
    } catch {
      // closed already, or not open yet: nothing can be written
    }
  };
  const timer = setInterval(flush, Math.max(10, flushIntervalMs));
  timer.unref();
  process.on('exit', flushSync);
  return { log, flush, flushSync };
}

/**
 * One access line per exchange, NGINX's combined fields in JSON: the line pino writes for
 * `log.info({ reqId, method, ... }, 'access')`, written straight into the batch of a proxy log
 * (AccessBatch.accessLine), or built in one template and handed to the logger's own destination
 * (pino.symbols: its public handle on the stream and the bound fields).
 * pino's generic serializer walked the object key by key and cost as much as a third of the
 * proxy's CPU per request on hello beside everything else the access log does (measured: proxy
 * CPU 36 µs/request with the log on against 25 off). test/proxy-access-line-same-as-pino.test.ts
 * fails if a pino upgrade writes the same call differently, or either way here differs from it.
 */
export function logAccess(log: Logger, ex: ProxyExchange, status: number, reqId: unknown, bytes: number, ms: number): void {
  if (!log.isLevelEnabled('info')) return;
  const upstreamMs = ex.upstreamMs;
  const error = ex.errorCode;
  const chindings = (log as unknown as Record<symbol, string>)[chindingsSym];
  const stream = (log as unknown as Record<symbol, { write(line: string): void }>)[streamSym];
  const batch = batches.get(stream);
  if (batch !== undefined && typeof reqId === 'string' && batch.accessLine(chindings, reqId, ex.method, ex.url, status, bytes, ex.hostAddress, upstreamMs, ms, error)) return;
  const line =
    `{"level":30,"time":${Date.now()}${chindings},"reqId":${typeof reqId === 'string' ? jsonString(reqId) : JSON.stringify(reqId)}` +
    `,"method":${jsonString(ex.method)},"path":${jsonString(ex.url)},"status":${status},"bytes":${bytes}` +
    `,"upstream":${jsonString(ex.hostAddress)},"upstream_ms":${upstreamMs < 0 ? 'null' : Math.round(upstreamMs * 100) / 100}` +
    `,"ms":${Math.round(ms * 100) / 100}${error !== null ? `,"error":${jsonString(error)}` : ''},"msg":"access"}\n`;
  if (batch !== undefined) batch.add(line);
  else stream.write(line);
}

/**
 * JSON.stringify(s) for a string: a string of printable ASCII without `"` or `\` (request ids,
 * methods, most paths, addresses) is quoted as it is, in JavaScript; anything else goes through
 * JSON.stringify. Four JSON.stringify calls a line, each a trip into the runtime, were half of
 * what building the line cost (perf).
 */
function jsonString(s: string): string {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) return JSON.stringify(s);
  }
  return `"${s}"`;
}
