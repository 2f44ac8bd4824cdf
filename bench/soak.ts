// `npm run soak [-- --minutes 10] [--rate 1000] [--config 2]`
//
// A steady-rate soak against proxy → appserver (configuration 2 by default:
// `gatewire proxy` → `gatewire serve` over a Unix socket): a fixed request rate
// for N minutes, a mix of GET /hello, GET /64k and a 256 KiB POST /echo, every
// response checked. Every `--sample` seconds it records each process's RSS and
// open file descriptors (its handles: sockets, pipes, files) from /proc. At the
// end it prints the samples, the growth between the first sample after warm-up
// and the last, and the error count; it exits 1 on any error or on growth above
// the thresholds, so "flat and zero errors" is a checked claim, not a reading.
import { writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';
import { tempDir } from '../test/helpers/net.ts';
import { ROOT } from '../test/helpers/procs.ts';
import { selectConfigurations } from './lib/configs.ts';
import { commOf, openFds, processTree, statusKb } from './lib/procfs.ts';
import { percentile } from './lib/stats.ts';
import { markdownTable } from './lib/table.ts';

const { values: args } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    rate: { type: 'string', default: '1000' },
    config: { type: 'string', default: '2' },
    sample: { type: 'string', default: '10' },
    connections: { type: 'string', default: '16' },
    'max-rss-growth': { type: 'string', default: '0.15' },
    'max-fd-growth': { type: 'string', default: '8' },
  },
});

const minutes = Number(args.minutes);
const rate = Number(args.rate);
const sampleS = Math.min(Number(args.sample), Math.max(1, (minutes * 60) / 6));
const warmS = Math.min(30, (minutes * 60) / 5);
const POST_BODY = Buffer.alloc(256 * 1024, 0x7a);
const log = (m: string) => process.stderr.write(`${m}\n`);

const config = selectConfigurations(args.config).find((c) => c.id === args.config) ?? selectConfigurations(args.config)[0];
if (!config) throw new Error(`no configuration ${args.config}`);

interface Sample {
  t: number;
  requests: number;
  errors: number;
  p50Ms: number;
  p99Ms: number;
  procs: Array<{ tier: string; pid: number; comm: string; rssKb: number; fds: number }>;
}

const { dir, cleanup } = tempDir('gws-');
const running = await config.start({ dir, group: 'rps' });
const origin = `http://${running.host}:${running.port}`;
const pool = new Pool(origin, { connections: Number(args.connections), pipelining: 1 });
log(`soak: (${config.id}) ${config.label} — ${rate} req/s for ${minutes} min, sampling every ${sampleS} s`);

let issued = 0;
let completed = 0;
let errors = 0;
let inflight = 0;
let windowLatencies: number[] = [];
const errorSamples: string[] = [];
const fail = (msg: string) => {
  errors++;
  if (errorSamples.length < 20) errorSamples.push(`${((performance.now() - t0) / 1000).toFixed(1)} s: ${msg}`);
};

async function one(i: number): Promise<void> {
  const kind = i % 50 === 0 ? 'post' : i % 10 === 0 ? '64k' : 'hello';
  const started = performance.now();
  inflight++;
  try {
    const res = await pool.request(
      kind === 'post'
        ? { path: '/echo', method: 'POST', body: POST_BODY, headers: { 'content-type': 'application/octet-stream' } }
        : { path: kind === 'hello' ? '/hello' : '/64k', method: 'GET' },
    );
    const body = Buffer.from(await res.body.arrayBuffer());
    const ok =
      res.statusCode === 200 &&
      (kind === 'hello' ? body.toString() === 'Hello, World!' : kind === '64k' ? body.length === 65536 : body.toString() === String(POST_BODY.length));
    if (!ok) fail(`${kind}: status ${res.statusCode}, ${body.length} bytes`);
    windowLatencies.push(performance.now() - started);
  } catch (err) {
    fail(`${kind}: ${(err as Error).message}`);
  } finally {
    inflight--;
    completed++;
  }
}

function sampleProcs(): Sample['procs'] {
  const procs: Sample['procs'] = [];
  for (const [tier, root] of Object.entries(running.tiers)) {
    if (!root) continue;
    for (const pid of processTree(root)) procs.push({ tier, pid, comm: commOf(pid), rssKb: statusKb(pid, 'VmRSS'), fds: openFds(pid) });
  }
  return procs;
}

const samples: Sample[] = [];
let skipped = 0;
const t0 = performance.now();
const endAt = t0 + minutes * 60_000;
let nextSample = t0 + sampleS * 1000;
const warmEnd = t0 + warmS * 1000;
let baseline: Sample | undefined;

await new Promise<void>((resolve) => {
  const tick = setInterval(() => {
    const now = performance.now();
    const due = Math.floor(((now - t0) / 1000) * rate);
    while (issued < due) {
      // Never queue without bound: a server that falls behind shows up as skipped requests, reported below.
      if (inflight >= 4096) {
        skipped += due - issued;
        issued = due;
        break;
      }
      void one(issued++);
    }
    if (now >= nextSample) {
      nextSample += sampleS * 1000;
      const s: Sample = {
        t: (now - t0) / 1000,
        requests: completed,
        errors,
        p50Ms: percentile(windowLatencies, 50),
        p99Ms: percentile(windowLatencies, 99),
        procs: sampleProcs(),
      };
      windowLatencies = [];
      samples.push(s);
      if (!baseline && now >= warmEnd) baseline = s;
      const rss = s.procs.map((p) => `${p.tier}:${p.pid} ${(p.rssKb / 1024).toFixed(1)} MiB ${p.fds} fds`).join(', ');
      log(`t=${s.t.toFixed(0)}s requests=${completed} errors=${errors} p99=${s.p99Ms.toFixed(2)}ms ${rss}`);
    }
    if (now >= endAt) {
      clearInterval(tick);
      resolve();
    }
  }, 5);
});
// Let the last requests finish (bounded).
const drainUntil = performance.now() + 10_000;
while (inflight > 0 && performance.now() < drainUntil) await new Promise((r) => setTimeout(r, 50));
const last: Sample = { t: (performance.now() - t0) / 1000, requests: completed, errors, p50Ms: percentile(windowLatencies, 50), p99Ms: percentile(windowLatencies, 99), procs: sampleProcs() };
samples.push(last);
if (inflight > 0) fail(`${inflight} requests still unanswered 10 s after the end`);
await pool.close();
await running.stop();
cleanup();

const first = baseline ?? samples[0]!;
const maxRssGrowth = Number(args['max-rss-growth']);
const maxFdGrowth = Number(args['max-fd-growth']);
const growth = last.procs.map((p) => {
  const b = first.procs.find((q) => q.pid === p.pid);
  return {
    tier: p.tier,
    pid: p.pid,
    comm: p.comm,
    rssStartMiB: b ? b.rssKb / 1024 : Number.NaN,
    rssEndMiB: p.rssKb / 1024,
    rssPeakMiB: Math.max(...samples.map((s) => s.procs.find((q) => q.pid === p.pid)?.rssKb ?? 0)) / 1024,
    rssGrowth: b ? (p.rssKb - b.rssKb) / b.rssKb : Number.NaN,
    fdsStart: b?.fds ?? Number.NaN,
    fdsEnd: p.fds,
  };
});
const replaced = first.procs.filter((p) => !last.procs.some((q) => q.pid === p.pid));
const problems: string[] = [];
if (errors > 0) problems.push(`${errors} errors`);
if (skipped > 0) problems.push(`${skipped} requests skipped (server fell behind the rate)`);
for (const g of growth) {
  if (!(g.rssGrowth <= maxRssGrowth)) problems.push(`${g.tier} pid ${g.pid}: RSS grew ${(100 * g.rssGrowth).toFixed(1)}% after warm-up`);
  if (!(g.fdsEnd - g.fdsStart <= maxFdGrowth)) problems.push(`${g.tier} pid ${g.pid}: fds ${g.fdsStart} → ${g.fdsEnd}`);
}
if (replaced.length) problems.push(`processes gone during the soak: ${replaced.map((p) => `${p.tier}:${p.pid}`).join(', ')}`);

const md = [
  `# gatewire soak — (${config.id}) ${config.label}`,
  '',
  `${rate} req/s for ${minutes} min (90% GET /hello, 8% GET /64k, 2% POST 256 KiB /echo; ${args.connections} keep-alive client connections); ` +
    `${completed.toLocaleString('en-US')} requests, **${errors} errors**, ${skipped} skipped. Baseline = first sample after ${warmS} s of warm-up.`,
  '',
  markdownTable(
    [
      { key: 'comm', title: 'process', numeric: false },
      { key: 'rssStartMiB', title: 'RSS after warm-up MiB', digits: 1 },
      { key: 'rssEndMiB', title: 'RSS at end MiB', digits: 1 },
      { key: 'rssPeakMiB', title: 'RSS peak MiB', digits: 1 },
      { key: 'growthPct', title: 'growth %', digits: 1 },
      { key: 'fdsStart', title: 'fds after warm-up' },
      { key: 'fdsEnd', title: 'fds at end' },
    ],
    growth.map((g) => ({ id: String(g.pid), label: g.tier, values: { ...g, growthPct: 100 * g.rssGrowth } })),
  ).replace('| # | configuration |', '| pid | tier |'),
  '',
  problems.length ? `Verdict: NOT flat / not clean — ${problems.join('; ')}` : 'Verdict: flat RSS and handle counts, zero errors.',
  '',
  ...errorSamples.map((e) => `- ${e}`),
];
process.stdout.write(`${md.join('\n')}\n`);
mkdirSync(path.join(ROOT, 'bench/results'), { recursive: true });
writeFileSync(
  path.join(ROOT, 'bench/results/soak-latest.json'),
  `${JSON.stringify({ date: new Date().toISOString(), config: config.id, label: config.label, rate, minutes, completed, errors, skipped, errorSamples, growth, samples }, null, 2)}\n`,
);
process.exitCode = problems.length ? 1 : 0;
