// The proxy's log: pino, written through pino's own buffered asynchronous
// destination (SonicBoom with sync: false): lines collect in memory and leave
// in large writes, off the request's path. NGINX's `access_log ... buffer=
// flush=` does the same, for the same reason: with a synchronous write per
// line the access log cost 10-40 % of the proxy's CPU. Nothing is lost on a
// graceful stop: the buffer is flushed every log.flush_interval, on SIGHUP, and
// synchronously on SIGTERM/SIGINT (after the last request) and at exit.
import pino, { type Logger } from 'pino';
import type { ProxyExchange } from './exchange.ts';

/** Bytes buffered before a write; a whole access line is about 250. */
const BUFFER_BYTES = 8 * 1024;

export interface ProxyLog {
  log: Logger;
  /** Asynchronous flush (SIGHUP, periodic). */
  flush(): void;
  /** Synchronous flush: what is buffered is written before this returns (stop, exit). */
  flushSync(): void;
}

/** The proxy process's logger on stdout (`fd` for tests), buffered. */
export function createProxyLog(level: string, flushIntervalMs: number, fd = 1): ProxyLog {
  const dest = pino.destination({ dest: fd, sync: false, minLength: BUFFER_BYTES });
  const log = pino({ level, base: { name: 'gatewire-proxy', pid: process.pid } }, dest);
  const flush = () => {
    try {
      dest.flush();
    } catch {
      // not ready yet (the fd opens asynchronously): the next tick writes it
    }
  };
  const flushSync = () => {
    try {
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

/** One access line per exchange, NGINX's combined fields in JSON. */
export function logAccess(log: Logger, ex: ProxyExchange, status: number, reqId: unknown, bytes: number, ms: number): void {
  const upstreamMs = ex.upstreamMs;
  log.info(
    {
      reqId,
      method: ex.method,
      path: ex.url,
      status,
      bytes,
      upstream: ex.hostAddress,
      upstream_ms: upstreamMs < 0 ? null : Math.round(upstreamMs * 100) / 100,
      ms: Math.round(ms * 100) / 100,
      ...(ex.errorCode !== null ? { error: ex.errorCode } : {}),
    },
    'access',
  );
}
