// Small HTTP clients the benchmark needs beyond wrk: a one-shot correctness check,
// 1 GiB streaming upload/download, SSE streams and idle keep-alive connections.
import http from 'node:http';
import net from 'node:net';
import { nowMs } from '../apps/routes.ts';
import { percentile } from './stats.ts';

export interface Target {
  host: string;
  port: number;
}

/** One request on a fresh connection; resolves with status and body (bounded by timeoutMs). */
export function fetchOnce(t: Target, method: string, path: string, body?: Buffer, timeoutMs = 10_000): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: t.host, port: t.port, method, path, agent: false, timeout: timeoutMs }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts) }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    if (body) {
      req.setHeader('content-length', body.length);
      req.setHeader('content-type', body[0] === 0x7b ? 'application/json' : 'application/octet-stream');
    }
    req.end(body);
  });
}

export interface TransferResult {
  bytes: number;
  seconds: number;
  status: number;
  /** What went wrong, if anything (wrong status, short transfer, reset). */
  error?: string;
}

/** GET /download?bytes=N, read and discard; checks the byte count. */
export function download(t: Target, bytes: number, timeoutMs: number): Promise<TransferResult> {
  return new Promise((resolve) => {
    const started = performance.now();
    let got = 0;
    let status = 0;
    let settled = false;
    const done = (error?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ bytes: got, seconds: (performance.now() - started) / 1000, status, error });
    };
    const req = http.get({ host: t.host, port: t.port, path: `/download?bytes=${bytes}`, agent: false }, (res) => {
      status = res.statusCode ?? 0;
      res.on('data', (c: Buffer) => {
        got += c.length;
      });
      res.on('end', () => done(status !== 200 ? `status ${status}` : got !== bytes ? `received ${got} of ${bytes} bytes` : undefined));
      res.on('error', (e) => done(`response error after ${got} bytes: ${e.message}`));
    });
    req.on('error', (e) => done(`request error after ${got} bytes: ${e.message}`));
    const timer = setTimeout(() => {
      done(`timed out after ${timeoutMs} ms with ${got} of ${bytes} bytes`);
      req.destroy();
    }, timeoutMs);
  });
}

/** POST /echo with N bytes streamed from one reused 1 MiB buffer (backpressure honoured); checks the echoed length. */
export function upload(t: Target, bytes: number, timeoutMs: number): Promise<TransferResult> {
  const chunk = Buffer.alloc(1 << 20, 0x79);
  return new Promise((resolve) => {
    const started = performance.now();
    let sent = 0;
    let settled = false;
    let status = 0;
    const done = (error?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ bytes: sent, seconds: (performance.now() - started) / 1000, status, error });
    };
    const req = http.request(
      { host: t.host, port: t.port, method: 'POST', path: '/echo', agent: false, headers: { 'content-type': 'application/octet-stream', 'content-length': bytes } },
      (res) => {
        status = res.statusCode ?? 0;
        const parts: Buffer[] = [];
        res.on('data', (c: Buffer) => parts.push(c));
        res.on('end', () => {
          const echoed = Buffer.concat(parts).toString();
          done(status !== 200 ? `status ${status}` : echoed !== String(bytes) ? `app saw "${echoed.slice(0, 40)}" bytes, sent ${bytes}` : undefined);
        });
      },
    );
    req.on('error', (e) => done(`request error after ${sent} bytes: ${e.message}`));
    const pump = () => {
      while (sent < bytes) {
        const n = Math.min(chunk.length, bytes - sent);
        sent += n;
        if (!req.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
          req.once('drain', pump);
          return;
        }
      }
      req.end();
    };
    pump();
    const timer = setTimeout(() => {
      done(`timed out after ${timeoutMs} ms having sent ${sent} of ${bytes} bytes`);
      req.destroy();
    }, timeoutMs);
  });
}

export interface SseResult {
  streams: number;
  connected: number;
  events: number;
  eventsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  errorSamples: string[];
}

/**
 * Opens `streams` concurrent GET /sse streams, waits `warmMs`, then counts events
 * for `durationMs`. Delivery latency = arrival time − the send time the app put
 * in the event (both wall clock on this machine).
 */
export async function runSse(
  t: Target,
  streams: number,
  warmMs: number,
  durationMs: number,
  window?: { start(): void; stop(): void },
): Promise<SseResult> {
  const agent = new http.Agent({ keepAlive: false, maxSockets: Number.POSITIVE_INFINITY });
  const latencies: number[] = [];
  let measuring = false;
  let events = 0;
  let connected = 0;
  let errors = 0;
  const errorSamples: string[] = [];
  const fail = (msg: string) => {
    errors++;
    if (errorSamples.length < 5) errorSamples.push(msg);
  };
  const reqs: http.ClientRequest[] = [];
  let closing = false;
  for (let i = 0; i < streams; i++) {
    const req = http.get({ host: t.host, port: t.port, path: '/sse', agent }, (res) => {
      if (res.statusCode !== 200) {
        fail(`status ${res.statusCode}`);
        res.resume();
        return;
      }
      connected++;
      res.setEncoding('latin1');
      let buf = '';
      res.on('data', (s: string) => {
        const now = nowMs();
        buf += s;
        let end = buf.indexOf('\n\n');
        while (end >= 0) {
          const ev = buf.slice(0, end);
          buf = buf.slice(end + 2);
          if (measuring && ev.startsWith('data: ')) {
            events++;
            latencies.push(now - Number(ev.slice(6)));
          }
          end = buf.indexOf('\n\n');
        }
      });
      res.on('end', () => {
        if (!closing) fail('stream ended early');
      });
      res.on('error', (e) => {
        if (!closing) fail(`stream error: ${e.message}`);
      });
    });
    req.on('error', (e) => {
      if (!closing) fail(`request error: ${e.message}`);
    });
    reqs.push(req);
  }
  await new Promise((r) => setTimeout(r, warmMs));
  window?.start();
  measuring = true;
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, durationMs));
  measuring = false;
  window?.stop();
  const seconds = (performance.now() - t0) / 1000;
  closing = true;
  for (const r of reqs) r.destroy();
  agent.destroy();
  if (connected < streams) fail(`${streams - connected} of ${streams} streams never started`);
  return {
    streams,
    connected,
    events,
    eventsPerSec: events / seconds,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    errors,
    errorSamples,
  };
}

export interface IdleConnections {
  opened: number;
  failed: number;
  errorSamples: string[];
  /** Connections still open right now. */
  open(): number;
  close(): void;
}

/**
 * Opens `count` keep-alive connections, each answering one GET /hello, and keeps
 * them idle. `parallel` connections are being set up at any moment.
 */
export async function openIdleConnections(t: Target, count: number, parallel = 200, timeoutMs = 20_000): Promise<IdleConnections> {
  const sockets: net.Socket[] = [];
  let openNow = 0;
  let opened = 0;
  let failed = 0;
  const errorSamples: string[] = [];
  const request = `GET /hello HTTP/1.1\r\nHost: ${t.host}:${t.port}\r\nConnection: keep-alive\r\n\r\n`;
  const one = () =>
    new Promise<void>((resolve) => {
      const sock = net.connect(t.port, t.host);
      let text = '';
      let answered = false;
      const timer = setTimeout(() => finish(`no answer within ${timeoutMs} ms`), timeoutMs);
      function finish(err?: string) {
        if (answered) return;
        answered = true;
        clearTimeout(timer);
        if (err) {
          failed++;
          if (errorSamples.length < 5) errorSamples.push(err);
          sock.destroy();
        } else {
          opened++;
          openNow++;
          sock.once('close', () => openNow--);
          sockets.push(sock);
        }
        resolve();
      }
      sock.setEncoding('latin1');
      sock.on('connect', () => sock.write(request));
      sock.on('data', (s: string) => {
        text += s;
        if (text.includes('Hello, World!')) finish(text.startsWith('HTTP/1.1 200') ? undefined : `unexpected answer: ${text.slice(0, 60)}`);
      });
      sock.on('error', (e) => finish(`socket error: ${e.message}`));
      sock.on('close', () => finish('closed before answering'));
    });
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next++;
      await one();
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, count) }, worker));
  return {
    opened,
    failed,
    errorSamples,
    open: () => openNow,
    close: () => {
      for (const s of sockets) s.destroy();
    },
  };
}
