// Real processes for the guarantee suite: an appserver running a small app
// that can stream, hang, count aborts and report its own handles and heap; the
// proxy (optionally with a raised fd limit and a probe that reports its
// handles, heap and fds on SIGWINCH); raw-socket clients with a strict
// HTTP/1.1 response reader that is independent of the code under test (it is
// the oracle for "never malformed"); /proc readings for RSS and fd counts.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { freePort, tempDir, waitForListen } from './net.ts';
import { GATEWIRE_BIN, type Proc, ROOT, startProcess } from './procs.ts';

/** A Fetch app for `gatewire serve` whose routes the guarantees need. */
export const GUARANTEE_APP = `
import { readdirSync } from 'node:fs';
const NAME = process.env.NAME ?? 'app';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const KB = new Uint8Array(1024).fill(97);
const enc = new TextEncoder();
const stats = { requests: 0, aborts: 0, downloadAborts: 0, uploadAborts: 0, maxUpload: 0 };

function resources() {
  const out = {};
  for (const r of process.getActiveResourcesInfo()) out[r] = (out[r] ?? 0) + 1;
  return out;
}

export default {
  async fetch(req, info) {
    const url = new URL(req.url);
    const p = url.pathname;
    const q = url.searchParams;
    if (p === '/debug') {
      if (globalThis.gc) { globalThis.gc(); globalThis.gc(); }
      const mem = process.memoryUsage();
      return Response.json({ name: NAME, pid: process.pid, ...stats, resources: resources(), heapUsed: mem.heapUsed, rss: mem.rss, fds: readdirSync('/proc/self/fd').length });
    }
    stats.requests++;
    let kind = 'other';
    req.signal.addEventListener('abort', () => {
      stats.aborts++;
      if (kind === 'download') stats.downloadAborts++;
      if (kind === 'upload') stats.uploadAborts++;
    }, { once: true });
    if (p === '/healthz') return new Response('ok');
    if (p === '/hello') return new Response('hello from ' + NAME);
    if (p === '/slow') {
      await sleep(Number(q.get('ms') ?? 1000));
      return new Response(NAME);
    }
    if (p === '/stream') {
      // kb chunks of 1 KiB, ms apart; cl=1 announces the total length
      const kb = Number(q.get('kb') ?? 10);
      const ms = Number(q.get('ms') ?? 50);
      let i = 0;
      const body = new ReadableStream({
        async pull(c) {
          if (i > 0) await sleep(ms);
          if (i >= kb) { c.close(); return; }
          i++;
          c.enqueue(KB);
        },
      }, { highWaterMark: 0 });
      const headers = { 'content-type': 'text/plain', 'x-name': NAME };
      if (q.get('cl') === '1') headers['content-length'] = String(kb * 1024);
      return new Response(body, { headers });
    }
    if (p === '/forever') {
      kind = 'download';
      let timer;
      const body = new ReadableStream({
        pull(c) {
          return new Promise((resolve) => {
            timer = setTimeout(() => { c.enqueue(KB); resolve(); }, 2);
          });
        },
        cancel() { clearTimeout(timer); },
      }, { highWaterMark: 0 });
      return new Response(body, { headers: { 'content-type': 'application/octet-stream' } });
    }
    if (p === '/upload') {
      // counts what reaches the app; echo=1 answers at once and reports each chunk as it is consumed
      kind = 'upload';
      let seen = 0;
      const count = (n) => {
        seen += n;
        if (seen > stats.maxUpload) stats.maxUpload = seen;
      };
      if (q.get('echo') === '1') {
        const reader = req.body.getReader();
        const body = new ReadableStream({
          async pull(c) {
            try {
              const { value, done } = await reader.read();
              if (done) { c.enqueue(enc.encode('total ' + seen + '\\n')); c.close(); return; }
              count(value.byteLength);
              c.enqueue(enc.encode('got ' + value.byteLength + '\\n'));
            } catch (err) { c.error(err); }
          },
          cancel() { reader.cancel().catch(() => {}); },
        }, { highWaterMark: 0 });
        return new Response(body, { headers: { 'content-type': 'text/plain' } });
      }
      try {
        if (req.body) for await (const chunk of req.body) count(chunk.byteLength);
      } catch {
        return new Response('aborted', { status: 499 });
      }
      return Response.json({ bytes: seen });
    }
    if (p.startsWith('/inspect') || q.get('inspect') === '1') {
      const v = info?.vars ?? [];
      const vars = {};
      for (let i = 0; i < v.length; i += 2) vars[v[i]] = v[i + 1];
      return Response.json({ name: NAME, uri: vars.REQUEST_URI, pathInfo: vars.PATH_INFO, query: vars.QUERY_STRING, url: req.url, headers: Object.fromEntries(req.headers) });
    }
    return Response.json({ name: NAME, path: p });
  },
};
`;

/**
 * Loaded into the proxy with --import: on SIGWINCH (no default action, and not one of the
 * signals close-with-grace turns into a shutdown) it runs a full GC and prints one line with
 * the process's active handles by type, heap, RSS, peak RSS and open fds. The proxy exposes
 * no handle counts of its own (see /work/briefs/bugs-reliability.md).
 */
const PROBE = `
import v8 from 'node:v8';
import vm from 'node:vm';
import { readdirSync, readFileSync } from 'node:fs';
v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc');
let seq = 0;
process.on('SIGWINCH', () => {
  gc(); gc();
  const resources = {};
  for (const r of process.getActiveResourcesInfo()) resources[r] = (resources[r] ?? 0) + 1;
  const mem = process.memoryUsage();
  const hwm = Number(/VmHWM:\\s+(\\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0) * 1024;
  process.stderr.write('GW_PROBE ' + JSON.stringify({ seq: ++seq, resources, heapUsed: mem.heapUsed, rss: mem.rss, peakRss: hwm, fds: readdirSync('/proc/self/fd').length }) + '\\n');
});
`;

export interface ProbeReport {
  seq: number;
  resources: Record<string, number>;
  heapUsed: number;
  rss: number;
  peakRss: number;
  fds: number;
}

export function scratchDir(t: TestContext): string {
  const { dir, cleanup } = tempDir('gwg-');
  t.after(cleanup);
  return dir;
}

export interface App {
  name: string;
  /** "127.0.0.1:PORT" or "unix:/path". */
  address: string;
  proc: Proc;
  appFile: string;
  /** Starts the same appserver again on the same address (after it was killed). */
  restart(): Promise<Proc>;
}

/** `gatewire serve` running GUARANTEE_APP (workers 0 = one process, so signals hit the server itself). */
export async function startApp(
  t: TestContext,
  name: string,
  opts: { address?: string; workers?: number; args?: string[]; dir?: string; gc?: boolean; noListen?: boolean } = {},
): Promise<App> {
  const dir = opts.dir ?? scratchDir(t);
  const appFile = path.join(dir, `app-${name}.mjs`);
  writeFileSync(appFile, GUARANTEE_APP);
  const address = opts.address ?? `127.0.0.1:${await freePort()}`;
  const launch = async (): Promise<Proc> => {
    const args = [...(opts.gc ? ['--expose-gc'] : []), GATEWIRE_BIN, 'serve', appFile];
    if (!opts.noListen) args.push('--listen', address);
    args.push('--workers', String(opts.workers ?? 0), '--log-level', 'warn', ...(opts.args ?? []));
    const proc = startProcess(process.execPath, args, { cwd: ROOT, env: { ...process.env, NAME: name } });
    t.after(() => {
      proc.kill('SIGCONT');
      return proc.stop(3000);
    });
    await proc.waitFor(/listening on/, 30000);
    if (!opts.noListen) await waitForListen(address);
    return proc;
  };
  const app: App = {
    name,
    address,
    appFile,
    proc: await launch(),
    async restart() {
      app.proc = await launch();
      return app.proc;
    },
  };
  return app;
}

export interface ProxySpec {
  routes?: Array<{ match: { host?: string; path_prefix: string }; upstream: string; strip_prefix?: boolean }>;
  upstreams: Record<string, { servers: Array<string | { address: string; [k: string]: unknown }>; [k: string]: unknown }>;
  [key: string]: unknown;
}

export interface Proxy {
  url: string;
  port: number;
  admin: string;
  configFile: string;
  proc: Proc;
  /** The proxy's own pid (through `sh -c 'ulimit ...; exec node'` it is the same process). */
  pid: number;
  rewrite(spec: ProxySpec): void;
  status(): Promise<ProxyStatus>;
  /** Handles, heap (after GC), RSS, peak RSS and fds of the proxy process (needs probe: true). */
  probe(): Promise<ProbeReport>;
}

export interface ProxyStatus {
  connections: number;
  upstreams: Array<{ name: string; inflight: number; hosts: Array<{ address: string; inflight: number; healthy: boolean; down: boolean; available: boolean; requests: number; fails: number }> }>;
}

function proxyConfig(spec: ProxySpec, port: number, adminPort: number): string {
  const upstreams = Object.fromEntries(
    Object.entries(spec.upstreams).map(([k, u]) => [k, { ...u, servers: u.servers.map((s) => (typeof s === 'string' ? { address: s } : s)) }]),
  );
  const rest = Object.fromEntries(Object.entries(spec).filter(([k]) => k !== 'routes' && k !== 'upstreams'));
  return JSON.stringify(
    {
      listen: { host: '127.0.0.1', port },
      admin: { host: '127.0.0.1', port: adminPort },
      log: { level: 'warn', access: false },
      routes: spec.routes ?? [{ match: { path_prefix: '/' }, upstream: Object.keys(spec.upstreams)[0] }],
      ...rest,
      upstreams,
    },
    null,
    2,
  );
}

/** `gatewire proxy --config FILE`; `fdLimit` runs it under `sh -c 'ulimit -n N && exec node ...'`. */
export async function startGuardedProxy(t: TestContext, spec: ProxySpec, opts: { fdLimit?: number; probe?: boolean; args?: string[] } = {}): Promise<Proxy> {
  const dir = scratchDir(t);
  const port = await freePort();
  const adminPort = await freePort();
  const configFile = path.join(dir, 'gatewire.json');
  writeFileSync(configFile, proxyConfig(spec, port, adminPort));
  const nodeArgs: string[] = [];
  if (opts.probe) {
    const probeFile = path.join(dir, 'probe.mjs');
    writeFileSync(probeFile, PROBE);
    nodeArgs.push('--import', probeFile);
  }
  nodeArgs.push(GATEWIRE_BIN, 'proxy', '--config', configFile, ...(opts.args ?? []));
  const proc =
    opts.fdLimit === undefined
      ? startProcess(process.execPath, nodeArgs, { cwd: ROOT })
      : startProcess('sh', ['-c', `${raiseFdLimit(opts.fdLimit)} && exec "$0" "$@"`, process.execPath, ...nodeArgs], { cwd: ROOT });
  t.after(() => proc.stop(5000));
  await proc.waitFor(/listening on/, 30000);
  const admin = `http://127.0.0.1:${adminPort}`;
  let seq = 0;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    admin,
    configFile,
    proc,
    pid: proc.child.pid as number,
    rewrite: (next) => writeFileSync(configFile, proxyConfig(next, port, adminPort)),
    status: async () => (await (await fetch(`${admin}/status`)).json()) as ProxyStatus,
    async probe() {
      const want = ++seq;
      proc.kill('SIGWINCH');
      const m = await proc.waitFor(new RegExp(`GW_PROBE (\\{"seq":${want},[^\\n]*\\})\\n`), 10000);
      return JSON.parse(m[1]) as ProbeReport;
    },
  };
}

/** Shell words that raise the soft fd limit to `n`, or to the hard limit when that is lower. */
export function raiseFdLimit(n: number): string {
  return `{ ulimit -n ${n} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; }`;
}

/** The soft "Max open files" of a running process. */
export function fdLimitOf(pid: number): number {
  const m = /Max open files\s+(\d+)/.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

/** RSS, peak RSS (VmHWM) and open fds of any process, from /proc. */
export function procMemory(pid: number): { rss: number; peakRss: number; fds: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string) => Number(new RegExp(`${name}:\\s+(\\d+)`).exec(status)?.[1] ?? 0) * 1024;
  return { rss: kb('VmRSS'), peakRss: kb('VmHWM'), fds: readdirSync(`/proc/${pid}/fd`).length };
}

export async function getJson<T = Record<string, unknown>>(url: string): Promise<T> {
  const res = await fetch(url, { signal: AbortSignal.timeout(15000) });
  return (await res.json()) as T;
}

/** Polls `check` until it returns true (bounded); returns the last value it saw for messages. */
export async function eventually(check: () => Promise<boolean> | boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`not true after ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------
// Raw HTTP/1.1: what a hostile client sends, and a strict reader of what comes back.

export interface ParsedResponse {
  status: number;
  reason: string;
  /** [name, value] pairs as received. */
  headers: Array<[string, string]>;
  body: Buffer;
  /** The body framing (Content-Length or chunked terminator) was satisfied. */
  complete: boolean;
}

export interface StrictParse {
  responses: ParsedResponse[];
  /** A protocol violation in what the peer sent (the thing that must never happen). */
  malformed: string | null;
  /** Bytes after the last complete response (a truncated one, or nothing). */
  rest: Buffer;
}

const STATUS_LINE = /^HTTP\/1\.[01] ([1-5]\d\d) ([\t \x21-\x7e\x80-\xff]*)$/;
const HEADER_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[\t ]*([\t \x21-\x7e\x80-\xff]*?)[\t ]*$/;

/**
 * Parses every HTTP/1.1 response in `data` (sent for requests whose methods are
 * `methods`, in order: HEAD responses have no body) by RFC 9112's rules, strictly:
 * a bare CR or LF, a NUL, an invalid status line or header, two differing
 * Content-Lengths, Content-Length with Transfer-Encoding: all "malformed".
 */
export function parseResponses(data: Buffer, methods: string[] = []): StrictParse {
  const responses: ParsedResponse[] = [];
  let off = 0;
  const fail = (why: string): StrictParse => ({ responses, malformed: why, rest: data.subarray(off) });
  while (off < data.length) {
    const headEnd = data.indexOf('\r\n\r\n', off, 'latin1');
    if (headEnd < 0) {
      const partial = data.subarray(off).toString('latin1');
      if (/[\0]|\r(?!\n)|(?<!\r)\n/.test(partial.replace(/\r$/, ''))) return fail(`bare CR/LF or NUL in a partial head: ${JSON.stringify(partial.slice(0, 200))}`);
      return { responses, malformed: null, rest: data.subarray(off) };
    }
    const head = data.subarray(off, headEnd).toString('latin1');
    if (/\0/.test(head)) return fail(`NUL in the head: ${JSON.stringify(head.slice(0, 300))}`);
    if (/\r(?!\n)|(?<!\r)\n/.test(head)) return fail(`bare CR or LF in the head: ${JSON.stringify(head.slice(0, 300))}`);
    const lines = head.split('\r\n');
    const sl = STATUS_LINE.exec(lines[0]);
    if (!sl) return fail(`invalid status line ${JSON.stringify(lines[0])}`);
    const headers: Array<[string, string]> = [];
    for (const line of lines.slice(1)) {
      const m = HEADER_LINE.exec(line);
      if (!m) return fail(`invalid header line ${JSON.stringify(line)}`);
      headers.push([m[1], m[2]]);
    }
    const status = Number(sl[1]);
    const method = methods[responses.length] ?? 'GET';
    const get = (n: string) => headers.filter(([k]) => k.toLowerCase() === n).map(([, v]) => v);
    const cls = get('content-length');
    const te = get('transfer-encoding');
    if (cls.length > 0 && te.length > 0) return fail('both Content-Length and Transfer-Encoding');
    if (new Set(cls).size > 1) return fail(`differing Content-Lengths ${cls.join(', ')}`);
    if (cls.length > 0 && !/^\d+$/.test(cls[0])) return fail(`invalid Content-Length ${cls[0]}`);
    let p = headEnd + 4;
    const noBody = method === 'HEAD' || status === 204 || status === 304 || status < 200;
    let body: Buffer;
    let complete: boolean;
    if (noBody) {
      body = Buffer.alloc(0);
      complete = true;
    } else if (te.length > 0) {
      if (te.join(',').trim().toLowerCase() !== 'chunked') return fail(`unsupported Transfer-Encoding ${te.join(',')}`);
      const parts: Buffer[] = [];
      complete = false;
      for (;;) {
        const eol = data.indexOf('\r\n', p, 'latin1');
        if (eol < 0) break;
        const sizeLine = data.subarray(p, eol).toString('latin1');
        if (!/^[0-9a-fA-F]+(;.*)?$/.test(sizeLine)) return fail(`invalid chunk size line ${JSON.stringify(sizeLine)}`);
        const size = Number.parseInt(sizeLine, 16);
        if (size === 0) {
          // no trailers expected: the terminator is CRLF
          if (data.length < eol + 4) break;
          if (data.subarray(eol + 2, eol + 4).toString('latin1') !== '\r\n') return fail('chunked terminator not followed by CRLF');
          p = eol + 4;
          complete = true;
          break;
        }
        if (data.length < eol + 2 + size + 2) {
          parts.push(data.subarray(eol + 2, Math.min(data.length, eol + 2 + size)));
          p = data.length;
          break;
        }
        parts.push(data.subarray(eol + 2, eol + 2 + size));
        if (data.subarray(eol + 2 + size, eol + 4 + size).toString('latin1') !== '\r\n') return fail('chunk not followed by CRLF');
        p = eol + 4 + size;
      }
      body = Buffer.concat(parts);
    } else if (cls.length > 0) {
      const n = Number(cls[0]);
      body = data.subarray(p, Math.min(data.length, p + n));
      complete = body.length === n;
      p += body.length;
    } else {
      // read until close: complete only if the peer closed (the caller knows)
      body = data.subarray(p);
      complete = false;
      p = data.length;
    }
    responses.push({ status, reason: sl[2], headers, body, complete });
    off = p;
    if (!complete) break;
  }
  return { responses, malformed: null, rest: data.subarray(off) };
}

export function headerOf(r: ParsedResponse, name: string): string | undefined {
  return r.headers.find(([k]) => k.toLowerCase() === name)?.[1];
}

export interface RawResult {
  data: Buffer;
  /** How the connection ended: the peer closed it ('end'), reset it ('reset'), or still open at the deadline ('open'). */
  ended: 'end' | 'reset' | 'open';
  ms: number;
}

/** Opens a connection, runs `script` with it, and collects every byte until the peer closes or `timeoutMs`. */
export function rawSession(
  port: number,
  script: (sock: net.Socket) => void | Promise<void>,
  opts: {
    timeoutMs?: number;
    host?: string;
    localAddress?: string;
    /** Stop reading (and close) once this returns true. */
    until?: (data: Buffer) => boolean;
    /** How to close when stopping while the peer has not closed (default destroy(); resetAndDestroy() sends RST). */
    onStop?: (sock: net.Socket) => void;
  } = {},
): Promise<RawResult> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: opts.host ?? '127.0.0.1', localAddress: opts.localAddress });
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (ended: RawResult['ended']) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (ended === 'open' && opts.onStop) opts.onStop(sock);
      else sock.destroy();
      resolve({ data: Buffer.concat(chunks, size), ended, ms: Date.now() - started });
    };
    const timer = setTimeout(() => finish('open'), opts.timeoutMs ?? 10000);
    sock.on('data', (d: Buffer) => {
      chunks.push(d);
      size += d.length;
      if (opts.until?.(Buffer.concat(chunks, size))) finish('open');
    });
    sock.on('end', () => finish('end'));
    sock.on('close', () => finish('end'));
    sock.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNRESET' || err.code === 'EPIPE') finish('reset');
      else if (!done) {
        done = true;
        clearTimeout(timer);
        reject(err);
      }
    });
    sock.once('connect', () => {
      Promise.resolve(script(sock)).catch((err) => {
        if (!done) {
          done = true;
          clearTimeout(timer);
          sock.destroy();
          reject(err);
        }
      });
    });
  });
}

/** One raw request (bytes as given) and everything the proxy answers until it closes or the timeout. */
export function rawRequest(port: number, bytes: string | Buffer, opts: { timeoutMs?: number; until?: (data: Buffer) => boolean } = {}): Promise<RawResult> {
  return rawSession(
    port,
    (sock) => {
      sock.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes);
    },
    opts,
  );
}

/** Stops reading once `n` complete responses arrived (keep-alive connections stay open otherwise). */
export function untilResponses(n: number, methods: string[] = []): (data: Buffer) => boolean {
  return (data) => {
    const p = parseResponses(data, methods);
    return p.malformed !== null || (p.responses.length >= n && p.responses.slice(0, n).every((r) => r.complete));
  };
}
