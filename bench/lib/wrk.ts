// Runs Debian's wrk and parses its report. wrk is the load generator (a separate
// process, as the issue asks); its text output is the only interface it has.
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';

export interface WrkResult {
  requests: number;
  durationS: number;
  rps: number;
  /** Latency percentiles in milliseconds (from --latency). */
  p50Ms: number;
  p99Ms: number;
  non2xx: number;
  socketErrors: { connect: number; read: number; write: number; timeout: number };
  /** non-2xx/3xx responses + every socket error. */
  errors: number;
}

const TIME_UNITS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const SIZE_UNITS: Record<string, number> = { '': 1, k: 1e3, K: 1e3, M: 1e6, G: 1e9 };

function toMs(value: string, unit: string): number {
  const f = TIME_UNITS[unit];
  if (f === undefined) throw new Error(`wrk: unknown time unit "${unit}"`);
  return Number(value) * f;
}

/** Parses the text wrk prints (with --latency). Throws if the essential lines are missing. */
export function parseWrkOutput(text: string): WrkResult {
  const total = /^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)/m.exec(text);
  const rps = /^Requests\/sec:\s+([\d.]+)/m.exec(text);
  if (!total || !rps) throw new Error(`wrk output not understood:\n${text}`);
  const pct = (p: string): number => {
    const m = new RegExp(`^\\s*${p}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm').exec(text);
    return m ? toMs(m[1]!, m[2]!) : Number.NaN;
  };
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const socketErrors = sock
    ? { connect: Number(sock[1]), read: Number(sock[2]), write: Number(sock[3]), timeout: Number(sock[4]) }
    : { connect: 0, read: 0, write: 0, timeout: 0 };
  const non = /Non-2xx or 3xx responses:\s+(\d+)/.exec(text);
  const non2xx = non ? Number(non[1]) : 0;
  const errors = non2xx + socketErrors.connect + socketErrors.read + socketErrors.write + socketErrors.timeout;
  return {
    requests: Number(total[1]),
    durationS: toMs(total[2]!, total[3]!) / 1000,
    rps: Number(rps[1]),
    p50Ms: pct('50'),
    p99Ms: pct('99'),
    non2xx,
    socketErrors,
    errors,
  };
}

/** wrk prints "20.5k"; only used for sanity output. */
export function parseMetric(s: string): number {
  const m = /^([\d.]+)([kKMG]?)$/.exec(s.trim());
  if (!m) return Number.NaN;
  return Number(m[1]) * (SIZE_UNITS[m[2]!] ?? 1);
}

export interface WrkOptions {
  url: string;
  threads?: number;
  connections?: number;
  durationS: number;
  /** Lua script path (POST bodies). */
  script?: string;
  /** Extra request headers, "Name: value". */
  headers?: string[];
  timeoutS?: number;
}

export function wrkArgs(o: WrkOptions): string[] {
  const args = [`-t${o.threads ?? 1}`, `-c${o.connections ?? 64}`, `-d${Math.max(1, Math.round(o.durationS))}s`, '--latency'];
  if (o.timeoutS) args.push('--timeout', `${o.timeoutS}s`);
  if (o.script) args.push('-s', o.script);
  for (const h of o.headers ?? []) args.push('-H', h);
  args.push(o.url);
  return args;
}

export function runWrk(o: WrkOptions, bin = 'wrk'): Promise<{ result: WrkResult; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, wrkArgs(o), { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.stderr.on('data', (d) => {
      out += d;
    });
    const guard = setTimeout(() => child.kill('SIGKILL'), (o.durationS + 30) * 1000);
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(guard);
      try {
        resolve({ result: parseWrkOutput(out), output: out });
      } catch (err) {
        reject(new Error(`wrk exited with ${code}: ${(err as Error).message}`));
      }
    });
  });
}

/** A wrk Lua script that POSTs `bytes` bytes (or the given body) on every request; returns its path. */
export function writePostScript(dir: string, bytes: number, json?: { body: string; contentType: string }): string {
  const file = path.join(dir, json ? 'post-json.lua' : `post-${bytes}.lua`);
  const body = json ? JSON.stringify(json.body) : `string.rep("x", ${bytes})`;
  writeFileSync(file, `wrk.method = "POST"\nwrk.body = ${body}\nwrk.headers["Content-Type"] = "${json?.contentType ?? 'application/octet-stream'}"\n`);
  return file;
}
