// `npm run bench:memory [-- --app bench/apps/gatewire-app.ts] [--gib 1] [--aborts 300] [--rounds 3]`
//
// The worker's memory targets of issue 12, measured on `gatewire serve
// --workers 1` loaded through real native sessions (no proxy in between):
//   1. same app, same load: the worker's peak RSS next to node:http's serving
//      the same routes (bench/apps/node-http.ts); target ≤ node:http + 15 MiB;
//   2. 1 GiB download and 1 GiB upload of unknown length: the worker's peak
//      RSS (VmHWM, reset before); target ≤ 150 MB;
//   3. N client-aborted 5 MiB downloads after a warm-up: the worker's RSS
//      growth; target ≤ 10 MB.
// The master is the supervisor's business and is reported apart.
// A peak is a race between the load and the garbage collector (dead 64 KiB
// socket-read buffers wait for a GC, and glibc keeps the pages they took): one
// run of the same build ranged 121-155 MiB. Each round starts fresh processes;
// the table gives the median and the range over the rounds.
import { parseArgs } from 'node:util';
import { Pool } from 'undici';
import type { GatewireSession, GatewireStream } from '../protocol/session.ts';
import { nativeSession, requestVars } from '../test/helpers/appserver-clients.ts';
import { tempDir } from '../test/helpers/net.ts';
import { GATEWIRE_BIN, type Proc, ROOT, startProcess } from '../test/helpers/procs.ts';
import { BIN_FLAGS } from './lib/configs.ts';
import { processTree, resetPeakRss, statusKb } from './lib/procfs.ts';

const MIB = 1024 * 1024;
const { values: args } = parseArgs({
  options: {
    app: { type: 'string', default: 'bench/apps/gatewire-app.ts' },
    gib: { type: 'string', default: '1' },
    aborts: { type: 'string', default: '300' },
    rounds: { type: 'string', default: '3' },
  },
});

const mb = (kb: number) => (kb / 1024).toFixed(1);

function request(session: GatewireSession, method: string, path: string, body?: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const stream = session.request(requestVars(method, path, [], body ? String(body.length) : ''), { endStream: !body });
    let n = 0;
    stream.on('data', (c: Buffer) => {
      n += c.length;
    });
    stream.on('end', () => resolve(n));
    stream.on('error', reject);
    if (body) stream.end(body);
  });
}

async function lanes(concurrency: number, count: number, fn: () => Promise<unknown>): Promise<void> {
  let left = count;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (left-- > 0) await fn();
    }),
  );
}

async function mixedLoad(send: (m: string, p: string, b?: Buffer) => Promise<unknown>): Promise<void> {
  const post = Buffer.alloc(MIB, 0x61);
  await lanes(16, 4000, () => send('GET', '/hello'));
  await lanes(16, 1000, () => send('GET', '/64k'));
  await lanes(8, 100, () => send('POST', '/echo', post));
}

function settle(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

interface Round {
  workerPeak: number;
  nodePeak: number;
  workerRest: number;
  nodeRest: number;
  downPeak: number;
  upPeak: number;
  abortBefore: number;
  abortAfter: number;
  masterPeak: number;
}

async function oneRound(): Promise<Round> {
  const { dir, cleanup } = tempDir('gw-wmem-');
  const procs: Proc[] = [];
  try {
    // With the shebang's V8 flags, as a user's `gatewire serve` runs (`node bin/gatewire.js` without
    // them gives the master Maglev: +2.3 MB); GW_BENCH_GATEWIRE_FLAGS replaces them (bench/lib/configs.ts).
    const serve = startProcess(process.execPath, [...BIN_FLAGS, GATEWIRE_BIN, 'serve', args.app!, '--listen', `unix:${dir}/app.sock`, '--workers', '1', '--max-body', '4g'], {
      cwd: ROOT,
      // GATEWIRE_BENCH_SERVE_NODE_OPTIONS: V8 flags for the serve processes only (e.g. to try heap sizes).
      env: { ...process.env, NODE_OPTIONS: process.env.GATEWIRE_BENCH_SERVE_NODE_OPTIONS ?? process.env.NODE_OPTIONS ?? '' },
    });
    procs.push(serve);
    await serve.waitFor(/gatewire serve: listening on /, 30_000);
    const master = serve.child.pid!;
    const worker = processTree(master).find((p) => p !== master)!;
    const nodeHttp = startProcess(process.execPath, ['--import', `${ROOT}/bin/typescript-loader.js`, `${ROOT}/bench/apps/node-http.ts`, `unix:${dir}/http.sock`], { cwd: ROOT });
    procs.push(nodeHttp);
    await nodeHttp.waitFor(/listening/, 30_000);
    const sessions = await Promise.all(Array.from({ length: 4 }, () => nativeSession(`unix:${dir}/app.sock`)));
    let next = 0;
    const gw = (m: string, p: string, b?: Buffer) => request(sessions[next++ % 4], m, p, b);
    const pool = new Pool('http://localhost', { socketPath: `${dir}/http.sock`, connections: 16 });
    const nh = async (m: string, p: string, b?: Buffer) => {
      const r = await pool.request({ method: m, path: p, body: b, headers: { 'content-length': b ? String(b.length) : '0' } });
      for await (const _ of r.body);
    };

    // 1. same app, same load
    await mixedLoad(gw);
    await mixedLoad(nh);
    await settle(1000);
    const w1 = { peak: statusKb(worker, 'VmHWM'), now: statusKb(worker, 'VmRSS') };
    const n1 = { peak: statusKb(nodeHttp.child.pid!, 'VmHWM'), now: statusKb(nodeHttp.child.pid!, 'VmRSS') };
    const m1 = statusKb(master, 'VmHWM');

    // 2. 1 GiB down, 1 GiB up
    const bytes = Number(args.gib) * 1024 * MIB;
    resetPeakRss(worker);
    const got = await request(sessions[0], 'GET', `/download?bytes=${bytes}`);
    if (got !== bytes) throw new Error(`download: ${got} of ${bytes} bytes`);
    const downPeak = statusKb(worker, 'VmHWM');
    resetPeakRss(worker);
    const up = await new Promise<string>((resolve, reject) => {
      const stream: GatewireStream = sessions[1].request(requestVars('POST', '/echo'), { endStream: false });
      let answer = '';
      stream.on('data', (c: Buffer) => {
        answer += c;
      });
      stream.on('end', () => resolve(answer));
      stream.on('error', reject);
      const chunk = Buffer.alloc(256 * 1024, 0x62);
      let sent = 0;
      const pump = () => {
        while (sent < bytes) {
          sent += chunk.length;
          if (!stream.write(chunk)) {
            stream.once('drain', pump);
            return;
          }
        }
        stream.end();
      };
      pump();
    });
    if (Number(up) !== bytes) throw new Error(`upload: the app counted ${up} of ${bytes} bytes`);
    const upPeak = statusKb(worker, 'VmHWM');

    // 3. aborted downloads
    const abortOne = () =>
      new Promise<void>((resolve) => {
        const stream = sessions[next++ % 4].request(requestVars('GET', `/download?bytes=${5 * MIB}`), { endStream: true });
        stream.once('data', () => {
          stream.reset();
          resolve();
        });
        stream.once('error', () => resolve());
        stream.once('close', () => resolve());
      });
    await lanes(10, 50, abortOne);
    await settle(2000);
    const before = statusKb(worker, 'VmRSS');
    await lanes(10, Number(args.aborts), abortOne);
    await settle(3000);
    const afterKb = statusKb(worker, 'VmRSS');
    const masterPeak = Math.max(m1, statusKb(master, 'VmHWM'));
    for (const s of sessions) s.destroy();
    await pool.close();
    return {
      workerPeak: w1.peak,
      nodePeak: n1.peak,
      workerRest: w1.now,
      nodeRest: n1.now,
      downPeak,
      upPeak,
      abortBefore: before,
      abortAfter: afterKb,
      masterPeak,
    };
  } finally {
    for (const p of procs) await p.stop(5000);
    cleanup();
  }
}

function median(values: number[]): number {
  const v = [...values].sort((a, b) => a - b);
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

/** "median (min–max)" in MiB over the rounds, or the one value. */
function spread(values: number[]): string {
  if (values.length === 1) return `${mb(values[0])} MiB`;
  return `${mb(median(values))} MiB (${mb(Math.min(...values))}–${mb(Math.max(...values))})`;
}

async function main(): Promise<void> {
  const rounds: Round[] = [];
  const n = Math.max(1, Number(args.rounds));
  for (let i = 0; i < n; i++) {
    rounds.push(await oneRound());
    process.stderr.write(`round ${i + 1}/${n} done\n`);
  }
  const col = (f: (r: Round) => number) => spread(rounds.map(f));
  process.stdout.write(`\n## worker memory, Node ${process.version}, app ${args.app}, ${n} round${n === 1 ? '' : 's'} (median (min–max))\n\n`);
  process.stdout.write(`| measure | gatewire worker | node:http | difference | target |\n|:--|--:|--:|--:|:--|\n`);
  process.stdout.write(
    `| peak RSS after the same load (4,000 hello, 1,000 × 64 KiB, 100 × 1 MiB POST) | ${col((r) => r.workerPeak)} | ${col((r) => r.nodePeak)} | ${col((r) => r.workerPeak - r.nodePeak)} | ≤ +15 MiB |\n`,
  );
  process.stdout.write(`| RSS at rest after it | ${col((r) => r.workerRest)} | ${col((r) => r.nodeRest)} | ${col((r) => r.workerRest - r.nodeRest)} | |\n`);
  process.stdout.write(`| peak RSS during a ${args.gib} GiB download | ${col((r) => r.downPeak)} | | | ≤ 150 MB |\n`);
  process.stdout.write(`| peak RSS during a ${args.gib} GiB upload of unknown length | ${col((r) => r.upPeak)} | | | ≤ 150 MB |\n`);
  process.stdout.write(`| RSS growth over ${args.aborts} aborted 5 MiB downloads after 50 of warm-up | ${col((r) => r.abortAfter - r.abortBefore)} | | | ≤ 10 MB |\n`);
  process.stdout.write(`\nmaster (supervisor) peak RSS: ${col((r) => r.masterPeak)}\n`);
}

await main();
