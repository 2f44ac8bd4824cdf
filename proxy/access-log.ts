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
 * `log.info({ reqId, method, ... }, 'access')`, built here in one template and handed to the
 * logger's own destination (pino.symbols: its public handle on the stream and the bound fields).
 * pino's generic serializer walked the object key by key and cost as much as a third of the
 * proxy's CPU per request on hello beside everything else the access log does (measured: proxy
 * CPU 36 µs/request with the log on against 25 off). test/proxy-access-line-same-as-pino.test.ts
 * fails if a pino upgrade writes the same call differently.
 */
export function logAccess(log: Logger, ex: ProxyExchange, status: number, reqId: unknown, bytes: number, ms: number): void {
  if (!log.isLevelEnabled('info')) return;
  const upstreamMs = ex.upstreamMs;
  const error = ex.errorCode;
  const line =
    `{"level":30,"time":${Date.now()}${(log as unknown as Record<symbol, string>)[chindingsSym]},"reqId":${typeof reqId === 'string' ? jsonString(reqId) : JSON.stringify(reqId)}` +
    `,"method":${jsonString(ex.method)},"path":${jsonString(ex.url)},"status":${status},"bytes":${bytes}` +
    `,"upstream":${jsonString(ex.hostAddress)},"upstream_ms":${upstreamMs < 0 ? 'null' : Math.round(upstreamMs * 100) / 100}` +
    `,"ms":${Math.round(ms * 100) / 100}${error !== null ? `,"error":${jsonString(error)}` : ''},"msg":"access"}\n`;
  const stream = (log as unknown as Record<symbol, { write(line: string): void }>)[streamSym];
  const batch = batches.get(stream);
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
