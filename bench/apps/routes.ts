// What every benchmark app answers, in one place so that node:http, Fastify and
// the gatewire Fetch app serve byte-identical responses (the WSGI app in
// wsgi_app.py mirrors these by hand: Python cannot import them).
//   GET  /hello               13-byte "Hello, World!"
//   GET  /64k                 65,536 bytes
//   POST /echo                reads the body, answers its length in decimal
//   GET  /sse                 server-sent events, one every SSE_INTERVAL_MS, data = send time (CLOCK_MONOTONIC ms)
//   GET  /download?bytes=N    N bytes, streamed in 64 KiB chunks with backpressure
export const HELLO_BODY = Buffer.from('Hello, World!');
export const K64_BODY = Buffer.alloc(65536, 0x78);
/** Reused by every download: the content never changes, so sharing one buffer is safe. */
export const DOWNLOAD_CHUNK = Buffer.alloc(65536, 0x78);
export const SSE_INTERVAL_MS = 10;

/**
 * CLOCK_MONOTONIC in milliseconds: one clock for every process on the machine
 * (Python's time.monotonic() reads the same one), so the SSE client can compare
 * the app's send time with its own arrival time. performance.timeOrigin is not
 * precise enough across processes (it is skewed by up to a millisecond).
 */
export function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

export function sseEvent(): string {
  return `data: ${nowMs().toFixed(3)}\n\n`;
}

/** `bytes=N` from a query string; 0 when absent or malformed. */
export function downloadSize(url: string): number {
  const m = /[?&]bytes=(\d+)/.exec(url);
  return m ? Number(m[1]) : 0;
}

/** "127.0.0.1:8080" → {host, port}; "unix:/p.sock" → {path}. */
export function parseListen(address: string): { path: string } | { host: string; port: number } {
  if (address.startsWith('unix:')) return { path: address.slice(5) };
  const i = address.lastIndexOf(':');
  return { host: address.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(address.slice(i + 1)) };
}
