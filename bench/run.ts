// `npm run bench [-- --quick] [--only hello,64k,post,sse,idle,bulk,elist,eitem,epost,ws,ws-idle,static] [--configs 2,3,x] [--workers N] [--rounds N] [--cpu-prof DIR]`
// (ws, ws-idle: the WebSocket scenarios of bench/websocket.ts, with their own configurations W1–W3; static: bench/static.ts, gatewire vs nginx serving files)
//
// Starts every configuration of the bench issue on loopback, loads it from a
// separate process (wrk, or the small clients in bench/lib), measures CPU and
// peak RSS of each tier from /proc, interleaves configurations (A B C … A B C …)
// over several rounds and prints medians as Markdown tables, with every row's
// ratio to configuration 3 (the Node peer) and 6 (NGINX → uWSGI). The same data
// goes to bench/results/latest.json. Errors are summed over rounds, never hidden.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { tempDir } from '../test/helpers/net.ts';
import { ROOT } from '../test/helpers/procs.ts';
import { type Configuration, type Group, type Running, selectConfigurations } from './lib/configs.ts';
import { download, fetchOnce, openIdleConnections, runSse, upload } from './lib/http-client.ts';
import { ForeignLoad, selfAndChildrenCpuSeconds, TierMonitor, type TierUsage, tierRssKb, waitForCalm } from './lib/procfs.ts';
import { median, ratio, sum } from './lib/stats.ts';
import { type Column, markdownTable, type TableRow } from './lib/table.ts';
import { runWrk, writePostScript } from './lib/wrk.ts';
import { runStaticBench } from './static.ts';
import { runWebSocketBench } from './websocket.ts';

type ScenarioId = 'hello' | '64k' | 'post' | 'sse' | 'idle' | 'bulk' | 'elist' | 'eitem' | 'epost';

interface Scenario {
  id: ScenarioId;
  group: Group;
  title: string;
  /** The metric the ×(3) / ×(6) ratios are computed on. */
  primary: string;
  columns: Column[];
}

const MIB = 1024 * 1024;

const RPS_COLUMNS: Column[] = [
  { key: 'rps', title: 'req/s' },
  { key: 'ratio3', title: '×(3)' },
  { key: 'ratio6', title: '×(6)' },
  { key: 'p50Ms', title: 'p50 ms', digits: 2 },
  { key: 'p99Ms', title: 'p99 ms', digits: 2 },
  { key: 'errors', title: 'errors' },
  { key: 'proxyCpuUs', title: 'proxy CPU µs/req' },
  { key: 'appCpuUs', title: 'app CPU µs/req' },
  { key: 'wrkCpuUs', title: 'wrk CPU µs/req' },
  { key: 'proxyRssMiB', title: 'proxy peak RSS MiB (per process)', digits: 1 },
  { key: 'appRssMiB', title: 'app peak RSS MiB (per process)', digits: 1 },
  { key: 'foreignCores', title: 'other load (cores)', digits: 2 },
];

const SCENARIOS: Scenario[] = [
  { id: 'hello', group: 'rps', title: 'hello — GET, 13-byte body', primary: 'rps', columns: RPS_COLUMNS },
  { id: '64k', group: 'rps', title: '64 KiB response — GET', primary: 'rps', columns: RPS_COLUMNS },
  { id: 'post', group: 'rps', title: '1 MiB POST echo (the app answers the length)', primary: 'rps', columns: RPS_COLUMNS },
  { id: 'elist', group: 'express', title: 'Express JSON API — GET /api/items (a list of 20)', primary: 'rps', columns: RPS_COLUMNS },
  { id: 'eitem', group: 'express', title: 'Express JSON API — GET /api/items/7 (one item)', primary: 'rps', columns: RPS_COLUMNS },
  { id: 'epost', group: 'express', title: 'Express JSON API — POST /api/items (small JSON body through express.json())', primary: 'rps', columns: RPS_COLUMNS },
  {
    id: 'sse',
    group: 'sse',
    title: 'server-sent events — concurrent streams, one event per stream every 10 ms',
    primary: 'eventsPerSec',
    columns: [
      { key: 'eventsPerSec', title: 'events/s' },
      { key: 'ratio3', title: '×(3)' },
      { key: 'ratio6', title: '×(6)' },
      { key: 'p50Ms', title: 'delivery p50 ms', digits: 2 },
      { key: 'p99Ms', title: 'delivery p99 ms', digits: 2 },
      { key: 'connected', title: 'streams' },
      { key: 'errors', title: 'errors' },
      { key: 'proxyCpuUs', title: 'proxy CPU µs/event', digits: 1 },
      { key: 'appCpuUs', title: 'app CPU µs/event', digits: 1 },
      { key: 'proxyRssMiB', title: 'proxy peak RSS MiB (per process)', digits: 1 },
      { key: 'appRssMiB', title: 'app peak RSS MiB (per process)', digits: 1 },
      { key: 'foreignCores', title: 'other load (cores)', digits: 2 },
    ],
  },
  {
    id: 'idle',
    group: 'idle',
    title: 'idle keep-alive client connections held by the front process (one GET each, then idle)',
    primary: 'frontRssAfterMiB',
    columns: [
      { key: 'held', title: 'held open' },
      { key: 'dropped', title: 'closed by server' },
      { key: 'errors', title: 'errors' },
      { key: 'frontRssBeforeMiB', title: 'front RSS before MiB', digits: 1 },
      { key: 'frontRssAfterMiB', title: 'front RSS held MiB', digits: 1 },
      { key: 'ratio3', title: '×(3)' },
      { key: 'ratio6', title: '×(6)' },
      { key: 'kibPerConn', title: 'KiB/conn', digits: 1 },
      { key: 'probeMs', title: 'new request while held, ms', digits: 1 },
    ],
  },
  {
    id: 'bulk',
    group: 'bulk',
    title: 'bulk transfer — one streamed download and one streamed upload (POST /echo)',
    primary: 'downMiBps',
    columns: [
      { key: 'downMiBps', title: 'download MiB/s' },
      { key: 'ratio3', title: '×(3)' },
      { key: 'ratio6', title: '×(6)' },
      { key: 'upMiBps', title: 'upload MiB/s' },
      { key: 'errors', title: 'errors' },
      { key: 'downProxyRssMiB', title: 'proxy peak RSS down MiB', digits: 1 },
      { key: 'upProxyRssMiB', title: 'proxy peak RSS up MiB', digits: 1 },
      { key: 'downAppRssMiB', title: 'app peak RSS down MiB', digits: 1 },
      { key: 'upAppRssMiB', title: 'app peak RSS up MiB', digits: 1 },
    ],
  },
];

interface Settings {
  quick: boolean;
  rounds: number;
  durationS: number;
  warmS: number;
  connections: number;
  sseStreams: number;
  sseWarmMs: number;
  sseMs: number;
  idleCount: number;
  bulkBytes: number;
  postBytes: number;
  /** Before each measurement, wait up to this long for other work on the machine to quiet down. */
  calmMs: number;
  cpuProfDir?: string;
}

interface Sample {
  values: Record<string, number>;
  errors: number;
  errorSamples: string[];
  /** Per-process figures (JSON only): which process of a tier holds the memory. */
  processes?: Record<string, Array<{ pid: number; comm: string; peakRssMiB: number; cpuSeconds: number }>>;
}

function perProcess(u: { proxy?: TierUsage; app: TierUsage }): Sample['processes'] {
  const out: NonNullable<Sample['processes']> = {};
  for (const [tier, usage] of Object.entries(u)) {
    if (usage) out[tier] = usage.processes.map((p) => ({ pid: p.pid, comm: p.comm, peakRssMiB: Math.round((p.peakRssKb / 1024) * 10) / 10, cpuSeconds: p.cpuSeconds }));
  }
  return out;
}

let startLoad = '';
let startRevision = '';
const log = (msg: string) => process.stderr.write(`${msg}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function usageValues(prefix: string, u: TierUsage | undefined, work: number): Record<string, number> {
  if (!u) return {};
  return {
    [`${prefix}CpuUs`]: work > 0 ? (u.cpuSeconds * 1e6) / work : Number.NaN,
    [`${prefix}RssMiB`]: u.peakRssKb / 1024,
  };
}

class Tiers {
  private readonly proxy?: TierMonitor;
  private readonly app: TierMonitor;
  constructor(r: Running) {
    this.proxy = r.tiers.proxy ? new TierMonitor(r.tiers.proxy) : undefined;
    this.app = new TierMonitor(r.tiers.app);
  }
  private readonly foreign = new ForeignLoad();
  /** Cores used by processes outside the measurement (other work on a shared machine). */
  foreignCores = Number.NaN;
  start(): void {
    this.foreign.start();
    this.proxy?.start();
    this.app.start();
  }
  stop(): { proxy?: TierUsage; app: TierUsage } {
    const proxy = this.proxy?.stop();
    const app = this.app.stop();
    this.foreignCores = this.foreign.stop((proxy?.cpuSeconds ?? 0) + app.cpuSeconds);
    return { proxy, app };
  }
}

async function check(r: Running, method: string, urlPath: string, body: Buffer | undefined, expect: (b: Buffer) => boolean): Promise<string | undefined> {
  try {
    const res = await fetchOnce(r, method, urlPath, body);
    if (res.status < 200 || res.status > 299) return `${method} ${urlPath}: status ${res.status}`;
    if (!expect(res.body)) return `${method} ${urlPath}: unexpected body (${res.body.length} bytes: ${res.body.subarray(0, 40).toString()})`;
    return undefined;
  } catch (err) {
    return `${method} ${urlPath}: ${(err as Error).message}`;
  }
}

/** The Express scenario's POST body: a small JSON object, as a form or an API client sends it. */
const EXPRESS_ITEM = JSON.stringify({ name: 'A new item', price: 12.5, tags: ['bench', 'new'], inStock: true });

function scenarioRequest(s: Scenario, set: Settings, dir: string): { route: string; method: string; body?: Buffer; script?: string; expect: (b: Buffer) => boolean } {
  switch (s.id) {
    case 'hello':
      return { route: '/hello', method: 'GET', expect: (b) => b.toString() === 'Hello, World!' };
    case '64k':
      return { route: '/64k', method: 'GET', expect: (b) => b.length === 65536 };
    case 'elist':
      return { route: '/api/items', method: 'GET', expect: (b) => JSON.parse(b.toString()).length === 20 };
    case 'eitem':
      return { route: '/api/items/7', method: 'GET', expect: (b) => JSON.parse(b.toString()).id === 7 };
    case 'epost':
      return {
        route: '/api/items',
        method: 'POST',
        body: Buffer.from(EXPRESS_ITEM),
        script: writePostScript(dir, 0, { body: EXPRESS_ITEM, contentType: 'application/json' }),
        expect: (b) => JSON.parse(b.toString()).name === 'A new item',
      };
    default:
      return {
        route: '/echo',
        method: 'POST',
        body: Buffer.alloc(set.postBytes, 0x78),
        script: writePostScript(dir, set.postBytes),
        expect: (b) => b.toString() === String(set.postBytes),
      };
  }
}

async function wrkScenario(s: Scenario, r: Running, set: Settings, dir: string, warm: boolean): Promise<Sample> {
  const { route, method, body, script, expect } = scenarioRequest(s, set, dir);
  const post = s.id === 'post';
  const errorSamples: string[] = [];
  const bad = await check(r, method, route, body, expect);
  if (bad) errorSamples.push(`check: ${bad}`);
  const url = `http://${r.host}:${r.port}${route}`;
  const timeoutS = post ? 10 : 5;
  if (set.calmMs > 0) await waitForCalm(set.calmMs);
  if (warm && set.warmS > 0) await runWrk({ url, connections: set.connections, durationS: set.warmS, script, timeoutS });
  const tiers = new Tiers(r);
  tiers.start();
  // the load generator's CPU: wrk is this process's child, reaped when runWrk resolves
  const gen0 = selfAndChildrenCpuSeconds();
  const { result, output } = await runWrk({ url, connections: set.connections, durationS: set.durationS, script, timeoutS });
  const genCpu = selfAndChildrenCpuSeconds() - gen0;
  const usage = tiers.stop();
  if (result.errors > 0) errorSamples.push(`wrk: ${output.split('\n').filter((l) => /Socket errors|Non-2xx/.test(l)).join('; ').trim()}`);
  return {
    values: {
      rps: result.rps,
      p50Ms: result.p50Ms,
      p99Ms: result.p99Ms,
      requests: result.requests,
      ...usageValues('proxy', usage.proxy, result.requests),
      ...usageValues('app', usage.app, result.requests),
      wrkCpuUs: result.requests > 0 ? (genCpu * 1e6) / result.requests : Number.NaN,
      foreignCores: tiers.foreignCores,
    },
    errors: result.errors + (bad ? 1 : 0),
    errorSamples,
    processes: perProcess(usage),
  };
}

async function sseScenario(r: Running, set: Settings): Promise<Sample> {
  if (set.calmMs > 0) await waitForCalm(set.calmMs);
  const tiers = new Tiers(r);
  let usage: ReturnType<Tiers['stop']> | undefined;
  const res = await runSse(r, set.sseStreams, set.sseWarmMs, set.sseMs, {
    start: () => tiers.start(),
    stop: () => {
      usage = tiers.stop();
    },
  });
  return {
    values: {
      eventsPerSec: res.eventsPerSec,
      p50Ms: res.p50Ms,
      p99Ms: res.p99Ms,
      connected: res.connected,
      events: res.events,
      ...usageValues('proxy', usage?.proxy, res.events),
      ...usageValues('app', usage?.app, res.events),
      foreignCores: tiers.foreignCores,
    },
    errors: res.errors,
    errorSamples: res.errorSamples,
    processes: usage ? perProcess(usage) : undefined,
  };
}

async function idleScenario(r: Running, set: Settings): Promise<Sample> {
  const front = r.tiers.proxy ?? r.tiers.app;
  const errorSamples: string[] = [];
  let errors = 0;
  for (let i = 0; i < 20; i++) {
    const bad = await check(r, 'GET', '/hello', undefined, (b) => b.toString() === 'Hello, World!');
    if (bad) {
      errors++;
      errorSamples.push(`check: ${bad}`);
      break;
    }
  }
  const before = tierRssKb(front);
  const conns = await openIdleConnections(r, set.idleCount);
  await sleep(1000);
  const after = tierRssKb(front);
  const held = conns.open();
  const t0 = performance.now();
  const probe = await check(r, 'GET', '/hello', undefined, (b) => b.toString() === 'Hello, World!');
  const probeMs = performance.now() - t0;
  conns.close();
  if (probe) {
    errors++;
    errorSamples.push(`request while ${held} connections held: ${probe}`);
  }
  errors += conns.failed;
  errorSamples.push(...conns.errorSamples.map((e) => `connect: ${e}`));
  return {
    values: {
      held,
      dropped: conns.opened - held,
      frontRssBeforeMiB: before / 1024,
      frontRssAfterMiB: after / 1024,
      kibPerConn: conns.opened > 0 ? (after - before) / conns.opened : Number.NaN,
      probeMs: probe ? Number.NaN : probeMs,
    },
    errors,
    errorSamples,
  };
}

async function bulkScenario(r: Running, set: Settings): Promise<Sample> {
  const values: Record<string, number> = {};
  const errorSamples: string[] = [];
  let errors = 0;
  // Generous: the slowest configuration must finish, not be cut.
  const timeoutMs = 30_000 + (set.bulkBytes / (10 * MIB)) * 1000;
  for (const dir of ['down', 'up'] as const) {
    const tiers = new Tiers(r);
    tiers.start();
    const res = dir === 'down' ? await download(r, set.bulkBytes, timeoutMs) : await upload(r, set.bulkBytes, timeoutMs);
    const usage = tiers.stop();
    values[`${dir}MiBps`] = res.error ? Number.NaN : res.bytes / MIB / res.seconds;
    if (usage.proxy) values[`${dir}ProxyRssMiB`] = usage.proxy.peakRssKb / 1024;
    values[`${dir}AppRssMiB`] = usage.app.peakRssKb / 1024;
    if (res.error) {
      errors++;
      errorSamples.push(`${dir === 'down' ? 'download' : 'upload'}: ${res.error}`);
    }
  }
  return { values, errors, errorSamples };
}

function runScenario(s: Scenario, r: Running, set: Settings, dir: string, first: boolean): Promise<Sample> {
  switch (s.group) {
    case 'rps':
    case 'express':
      // --quick warms each configuration once (its first scenario) to stay under 2 minutes.
      return wrkScenario(s, r, set, dir, first || !set.quick);
    case 'sse':
      return sseScenario(r, set);
    case 'idle':
      return idleScenario(r, set);
    case 'bulk':
      return bulkScenario(r, set);
  }
}

function toolVersion(cmd: string, args: string[]): string {
  try {
    const out = execFileSync('sh', ['-c', `${cmd} ${args.join(' ')} 2>&1`], { encoding: 'utf8', env: { ...process.env, PATH: `/usr/sbin:${process.env.PATH}` } });
    return out.split('\n')[0]!.trim();
  } catch (err) {
    const out = String((err as { stdout?: string }).stdout ?? '');
    return out.split('\n')[0]?.trim() || 'not installed';
  }
}

function pkgVersion(name: string): string {
  try {
    return execFileSync(process.execPath, ['-p', `require('${name}/package.json').version`], { cwd: ROOT, encoding: 'utf8' }).trim();
  } catch {
    return '?';
  }
}

function gitRevision(): string {
  // A snapshot (git archive, see README) has no .git: the caller names the revision.
  if (process.env.BENCH_REVISION) return process.env.BENCH_REVISION;
  try {
    const rev = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'proxy', 'appserver', 'protocol', 'bench'], { cwd: ROOT, encoding: 'utf8' }).trim();
    return dirty ? `${rev} + uncommitted changes in proxy/appserver/protocol/bench` : rev;
  } catch {
    return 'unknown';
  }
}

function machine() {
  const cpus = os.cpus();
  return {
    cpu: cpus[0]?.model ?? 'unknown',
    cores: os.availableParallelism(),
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    fastify: pkgVersion('fastify'),
    replyFrom: pkgVersion('@fastify/reply-from'),
    undici: pkgVersion('undici'),
    nginx: toolVersion('nginx', ['-v']),
    uwsgi: toolVersion('uwsgi', ['--version']),
    wrk: toolVersion('wrk', ['-v']).replace(/ \[.*$/, ''),
    revision: gitRevision(),
  };
}

async function main(): Promise<void> {
  const { values: args } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      only: { type: 'string' },
      configs: { type: 'string' },
      rounds: { type: 'string' },
      duration: { type: 'string' },
      'cpu-prof': { type: 'string' },
      json: { type: 'string' },
      workers: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  if (args.help) {
    process.stdout.write(
      'usage: npm run bench -- [--quick] [--only hello,64k,post,elist,eitem,epost,sse,idle,bulk,ws,ws-idle,static] [--configs 0,1,2,3,4,5,6,7,x2,x3] [--workers N] [--rounds N] [--duration S] [--cpu-prof DIR] [--json FILE]\n' +
        '  --workers N   also run (2w): configuration 2 with `gatewire proxy --workers N`, compared with (2) in its own section\n',
    );
    return;
  }
  const quick = args.quick;
  const set: Settings = {
    quick,
    rounds: Number(args.rounds ?? (quick ? 1 : 3)),
    durationS: Number(args.duration ?? (quick ? 1 : 5)),
    warmS: 1,
    connections: 64,
    sseStreams: 100,
    sseWarmMs: 500,
    sseMs: quick ? 1500 : 2000,
    idleCount: quick ? 2000 : 10_000,
    bulkBytes: quick ? 64 * MIB : 1024 * MIB,
    postBytes: MIB,
    calmMs: quick ? 0 : 500,
    cpuProfDir: args['cpu-prof'] ? path.resolve(args['cpu-prof']) : undefined,
  };
  const only = args.only ? new Set(args.only.split(',').map((s) => s.trim())) : undefined;
  const scenarios = SCENARIOS.filter((s) => !only || only.has(s.id));
  const proxyWorkers = args.workers === undefined ? undefined : Number(args.workers);
  if (proxyWorkers !== undefined && !(Number.isInteger(proxyWorkers) && proxyWorkers >= 2)) throw new Error('--workers needs a number of proxy workers >= 2');
  const configs = selectConfigurations(args.configs, proxyWorkers);
  const wsEcho = !only || only.has('ws');
  const wsIdle = !only || only.has('ws-idle');
  // static files (issue 14) compare gatewire with nginx on their own, outside the configurations
  const wantStatic = !only || only.has('static');
  if ((scenarios.length === 0 && !wsEcho && !wsIdle && !wantStatic) || configs.length === 0) throw new Error('nothing selected: check --only / --configs');
  if (set.cpuProfDir) mkdirSync(set.cpuProfDir, { recursive: true });

  const started = Date.now();
  startRevision = gitRevision();
  startLoad = os.loadavg().map((x) => x.toFixed(2)).join(' / ');
  const samples = new Map<ScenarioId, Map<string, Sample[]>>();
  const failures = new Map<string, string[]>();
  for (const s of scenarios) samples.set(s.id, new Map(configs.map((c) => [c.id, []])));

  const groups = (['rps', 'express', 'sse', 'idle', 'bulk'] as const).filter((g) => scenarios.some((s) => s.group === g));
  for (const group of groups) {
    const groupScenarios = scenarios.filter((s) => s.group === group);
    // the Express API runs on its own configurations, the bench app on the others
    const groupConfigs = configs.filter((c) => (c.kind === 'express') === (group === 'express'));
    // Memory-bound scenarios are measured once; throughput ones over `rounds` interleaved rounds.
    const rounds = group === 'idle' || group === 'bulk' ? 1 : set.rounds;
    for (let round = 1; round <= rounds; round++) {
      for (const c of groupConfigs) {
        await runConfiguration(c, group, groupScenarios, set, round, rounds, samples, failures);
      }
    }
  }

  const report = scenarios.length > 0 ? buildReport(scenarios, configs, samples, failures, set, started) : { markdown: '', json: {} as Record<string, unknown> };
  if (wsEcho || wsIdle) {
    const ws = await runWebSocketBench({ quick, rounds: set.rounds, seconds: Math.max(2, set.durationS), echo: wsEcho, idle: wsIdle, log });
    report.markdown += ws.markdown;
    Object.assign(report.json as Record<string, unknown>, ws.json);
  }
  if (wantStatic) {
    const st = await runStaticBench({ rounds: set.rounds, durationS: set.durationS, connections: set.connections, calmMs: set.calmMs }, log);
    report.markdown += `\n${st.markdown}`;
    (report.json as Record<string, unknown>).static = { ...st.json, bar: st.bar };
  }
  process.stdout.write(report.markdown);
  const jsonFile = args.json ? path.resolve(args.json) : path.join(ROOT, 'bench/results/latest.json');
  mkdirSync(path.dirname(jsonFile), { recursive: true });
  writeFileSync(jsonFile, `${JSON.stringify(report.json, null, 2)}\n`);
  log(`\nwrote ${path.relative(process.cwd(), jsonFile)} in ${((Date.now() - started) / 1000).toFixed(0)} s`);
}

async function runConfiguration(
  c: Configuration,
  group: Group,
  groupScenarios: Scenario[],
  set: Settings,
  round: number,
  rounds: number,
  samples: Map<ScenarioId, Map<string, Sample[]>>,
  failures: Map<string, string[]>,
): Promise<void> {
  const { dir, cleanup } = tempDir('gwb-');
  let running: Running | undefined;
  try {
    running = await c.start({
      dir,
      group,
      nodeFlags: set.cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${set.cpuProfDir}`] : undefined,
    });
  } catch (err) {
    const msg = (err as Error).message.split('\n').slice(0, 6).join(' ⏎ ');
    log(`[${group} ${round}/${rounds}] (${c.id}) failed to start: ${msg}`);
    const list = failures.get(c.id) ?? [];
    if (!list.includes(msg)) list.push(msg);
    failures.set(c.id, list);
    cleanup();
    return;
  }
  try {
    for (const [i, s] of groupScenarios.entries()) {
      let sample: Sample;
      try {
        sample = await runScenario(s, running, set, dir, i === 0);
      } catch (err) {
        sample = { values: {}, errors: 1, errorSamples: [(err as Error).message.split('\n')[0]!] };
      }
      samples.get(s.id)!.get(c.id)!.push(sample);
      const v = sample.values;
      const main = s.primary in v ? `${s.primary}=${Math.round(v[s.primary]!)}` : 'no result';
      log(`[${s.id} ${round}/${rounds}] (${c.id}) ${main} errors=${sample.errors}${sample.errorSamples.length ? ` (${sample.errorSamples[0]})` : ''}`);
    }
  } finally {
    await running.stop();
    cleanup();
  }
}

/**
 * "188 = 72 + 104 + 12 esbuild": a multi-process tier's peak RSS, per process
 * (medians over rounds, processes in pid order: the master first). Undefined for
 * single-process tiers or when the process count changed between rounds.
 */
function rssSplit(list: Sample[], tier: string): string | undefined {
  const runs = list.map((x) => x.processes?.[tier]).filter((p): p is NonNullable<typeof p> => !!p && p.length > 1);
  if (runs.length === 0 || runs.some((r) => r.length !== runs[0]!.length)) return undefined;
  const sorted = runs.map((r) => [...r].sort((a, b) => a.pid - b.pid));
  const parts = sorted[0]!.map((p, i) => ({ comm: p.comm, mib: median(sorted.map((r) => r[i]!.peakRssMiB)) }));
  const total = median(sorted.map((r) => r.reduce((acc, p) => acc + p.peakRssMiB, 0)));
  const main = parts[0]!.comm;
  return `${total.toFixed(0)} = ${parts.map((p) => `${p.mib.toFixed(0)}${p.comm === main ? '' : ` ${p.comm}`}`).join(' + ')}`;
}

/** The proxy issue's targets, checked on the medians of this run: one line each, "met" or "NOT met" with the figures. */
function barCheck(scenarios: Record<string, { rows: Array<{ id: string; median: Record<string, number> }> }>): string[] {
  const lines: string[] = [];
  const get = (sc: string, id: string, k: string) => scenarios[sc]?.rows.find((r) => r.id === id)?.median[k];
  const verdict = (ok: boolean) => (ok ? 'met' : '**NOT met**');
  const pairs: Array<[string, string, string, number]> = [
    ['hello', '2', '3', 1.3],
    ['64k', '2', '3', 1.3],
    ['post', '2', '3', 1.3],
    ['elist', 'x2', 'x3', 1.1],
    ['eitem', 'x2', 'x3', 1.1],
    ['epost', 'x2', 'x3', 1.1],
  ];
  for (const [sc, ours, peer, rpsTarget] of pairs) {
    if (!scenarios[sc]) continue;
    const rps = ratio(get(sc, ours, 'rps'), get(sc, peer, 'rps'));
    if (!Number.isFinite(rps)) continue;
    const cpu = ratio(get(sc, ours, 'proxyCpuUs'), get(sc, peer, 'proxyCpuUs'));
    const rss = ratio(get(sc, ours, 'proxyRssMiB'), get(sc, peer, 'proxyRssMiB'));
    const p99o = get(sc, ours, 'p99Ms') ?? Number.NaN;
    const p99p = get(sc, peer, 'p99Ms') ?? Number.NaN;
    const parts = [
      `req/s (${ours}) ÷ (${peer}) = ${rps.toFixed(2)}× (target ≥ ${rpsTarget}×: ${verdict(rps >= rpsTarget)})`,
      `proxy CPU/req ${cpu.toFixed(2)}× (target ≤ 0.7×: ${verdict(cpu <= 0.7)})`,
      `proxy peak RSS ${rss.toFixed(2)}× (target ≤ 1.0×: ${verdict(rss <= 1)})`,
    ];
    if (ours === '2') parts.push(`p99 ${p99o.toFixed(2)} vs ${p99p.toFixed(2)} ms (target at or below: ${verdict(p99o <= p99p)})`);
    lines.push(`${sc}: ${parts.join('; ')}`);
    if (ours === '2') {
      const log = ratio(get(sc, '2', 'proxyCpuUs'), get(sc, '2q', 'proxyCpuUs'));
      if (Number.isFinite(log)) lines.push(`${sc}: access log on ÷ off, proxy CPU/req = ${log.toFixed(3)}× (target ≤ 1.10×: ${verdict(log <= 1.1)})`);
      // the same stack over a Unix socket, against the same targets (not the default since `gatewire up` moved to TCP)
      const unix = ratio(get(sc, '2u', 'rps'), get(sc, peer, 'rps'));
      if (Number.isFinite(unix))
        lines.push(
          `${sc}: over a Unix socket (2u) ÷ (${peer}) = ${unix.toFixed(2)}× req/s (target ≥ ${rpsTarget}×: ${verdict(unix >= rpsTarget)}), proxy CPU/req ${ratio(get(sc, '2u', 'proxyCpuUs'), get(sc, peer, 'proxyCpuUs')).toFixed(2)}×`,
        );
    }
  }
  return lines;
}

/**
 * (2w) against (2): the proxy's req/s with N workers over one, and where the machine's CPU went
 * (cores = CPU µs/req × req/s): the load generator shares the cores with both tiers, so a
 * ratio below N× is expected on a machine with no core to spare.
 */
function workersSection(scenarios: Record<string, { title: string; rows: Array<{ id: string; median: Record<string, number> }> }>): string[] {
  const lines: string[] = [];
  for (const [id, sc] of Object.entries(scenarios)) {
    const one = sc.rows.find((r) => r.id === '2')?.median;
    const many = sc.rows.find((r) => r.id === '2w')?.median;
    if (!one || !many || !Number.isFinite(one.rps) || !Number.isFinite(many.rps)) continue;
    const cores = (m: Record<string, number>, k: string) => ((m[k] ?? Number.NaN) * m.rps) / 1e6;
    const cpu = (m: Record<string, number>) =>
      `proxy ${cores(m, 'proxyCpuUs').toFixed(2)} + app ${cores(m, 'appCpuUs').toFixed(2)} + wrk ${cores(m, 'wrkCpuUs').toFixed(2)} cores`;
    const r = ratio(many.rps, one.rps);
    lines.push(
      `- ${id}: (2w) ${Math.round(many.rps)} req/s ÷ (2) ${Math.round(one.rps)} req/s = **${r.toFixed(2)}×** (target ≥ 1.3×: ${r >= 1.3 ? 'met' : '**NOT met**'}); CPU (2) ${cpu(one)}; (2w) ${cpu(many)}; proxy µs/req ${one.proxyCpuUs?.toFixed(0)} → ${many.proxyCpuUs?.toFixed(0)}`,
    );
  }
  return lines.length ? ['## Proxy workers: (2w) against (2)', '', ...lines] : [];
}

function buildReport(
  scenarios: Scenario[],
  configs: Configuration[],
  samples: Map<ScenarioId, Map<string, Sample[]>>,
  failures: Map<string, string[]>,
  set: Settings,
  started: number,
): { markdown: string; json: object } {
  const m = machine();
  const out: string[] = [];
  const date = new Date().toISOString();
  const revision = startRevision === m.revision ? m.revision : `${startRevision} → ${m.revision} (**the code changed during the run: rows mix revisions**; run from a snapshot, see bench/README.md)`;
  out.push(`# gatewire benchmark${set.quick ? ' (--quick)' : ''} — ${date}, revision ${revision}`, '');
  out.push(
    `Machine: ${m.cpu}, **${m.cores} cores shared by the load generator, the proxy and the app**, ${m.memoryGiB} GiB, ${m.kernel}. ` +
      `Node ${m.node}, fastify ${m.fastify}, @fastify/reply-from ${m.replyFrom}, undici ${m.undici}; ${m.nginx}; uWSGI ${m.uwsgi}; ${m.wrk}.`,
    '',
  );
  out.push(
    'Workers: every proxy and every app server runs **one worker process**: nginx master + 1 worker; uWSGI master + 1 worker (Python WSGI; 128 threads only in the SSE scenario); ' +
      '`gatewire serve --workers 1` (master + 1 worker); `gatewire proxy`, the reply-from proxy, Fastify and the node:http app are single processes. Masters count in their tier.',
    '',
  );
  const rounds = set.rounds;
  out.push(
    `Method: \`wrk -t1 -c${set.connections} -d${set.durationS}s --latency\` after a ${set.warmS} s wrk warm-up${set.quick ? ' (--quick: before the first scenario of each configuration only)' : ''}; ` +
      `configurations interleaved A B C … over ${rounds} round${rounds > 1 ? 's' : ''} (idle and bulk: 1 round), medians shown; errors are summed over rounds. ` +
      'CPU µs/req = utime+stime of all the tier’s processes (from /proc, workers included) ÷ requests completed. Peak RSS = sum over the tier’s processes of VmHWM, reset before each measurement. ' +
      `×(3) and ×(6) = the row’s headline figure ÷ configuration 3’s (fastify + reply-from) and 6’s (nginx → uWSGI). ` +
      `"other load" = CPU cores busy during the measurement outside the measured tiers and the load generator (this machine is shared: a non-zero figure means the row was disturbed)${set.calmMs ? `; each measurement first waits up to ${set.calmMs / 1000} s for the machine to be idle` : ''}. ` +
      `SSE: ${set.sseStreams} streams, ${set.sseMs / 1000} s measured after ${set.sseWarmMs / 1000} s; idle: ${set.idleCount.toLocaleString('en-US')} connections; bulk: ${set.bulkBytes / MIB} MiB each way; POST: ${set.postBytes / MIB} MiB bodies.`,
    '',
  );
  out.push(`Load average (1/5/15 min) at the end: ${os.loadavg().map((x) => x.toFixed(2)).join(' / ')}; at the start: ${startLoad}.`, '');
  out.push('Configurations:', '');
  for (const c of configs) out.push(`- (${c.id}) ${c.label} — ${c.workers}`);
  out.push('');

  const json: Record<string, unknown> = {
    date,
    quick: set.quick,
    machine: m,
    settings: set,
    configurations: configs.map((c) => ({ id: c.id, label: c.label, workers: c.workers, startFailures: failures.get(c.id) ?? [] })),
    scenarios: {} as Record<string, unknown>,
  };

  for (const s of scenarios) {
    const perConfig = samples.get(s.id)!;
    const medians = new Map<string, Record<string, number>>();
    for (const c of configs) {
      const list = perConfig.get(c.id)!;
      const keys = new Set(list.flatMap((x) => Object.keys(x.values)));
      const med: Record<string, number> = {};
      for (const k of keys) med[k] = median(list.map((x) => x.values[k] ?? Number.NaN));
      medians.set(c.id, med);
    }
    const peer = s.group === 'express' ? 'x3' : '3';
    const ref3 = medians.get(peer)?.[s.primary];
    const ref6 = medians.get('6')?.[s.primary];
    const rows: TableRow[] = [];
    const jsonRows: object[] = [];
    const notes: string[] = [];
    for (const c of configs) {
      if ((c.kind === 'express') !== (s.group === 'express')) continue;
      const list = perConfig.get(c.id)!;
      const med = medians.get(c.id)!;
      const errors = sum(list.map((x) => x.errors));
      const values: TableRow['values'] = { ...med, errors, ratio3: ratio(med[s.primary], ref3), ratio6: ratio(med[s.primary], ref6) };
      for (const tier of ['proxy', 'app']) {
        const split = rssSplit(list, tier);
        if (split) values[`${tier}RssMiB`] = split;
      }
      const failed = failures.get(c.id);
      if (list.length === 0) {
        values.errors = failed ? 'did not start' : 'not run';
        if (failed) notes.push(`(${c.id}) did not start: ${failed[0]}`);
      }
      for (const e of new Set(list.flatMap((x) => x.errorSamples))) notes.push(`(${c.id}) ${e}`);
      rows.push({ id: c.id, label: c.label, values });
      const allRatios: Record<string, { to3: number; to6: number }> = {};
      for (const k of Object.keys(med)) allRatios[k] = { to3: ratio(med[k], medians.get(peer)?.[k]), to6: ratio(med[k], medians.get('6')?.[k]) };
      jsonRows.push({ id: c.id, label: c.label, median: med, errors, ratio3: values.ratio3, ratio6: values.ratio6, ratios: allRatios, rounds: list, startFailures: failed ?? [] });
    }
    out.push(`## ${s.title}`, '', markdownTable(s.columns, rows), '');
    if (notes.length) {
      out.push('Errors and failures:', '');
      for (const n of notes.slice(0, 30)) out.push(`- ${n}`);
      if (notes.length > 30) out.push(`- … ${notes.length - 30} more in latest.json`);
      out.push('');
    }
    (json.scenarios as Record<string, unknown>)[s.id] = { title: s.title, primary: s.primary, rows: jsonRows };
  }
  const split = workersSection(json.scenarios as Record<string, { title: string; rows: Array<{ id: string; median: Record<string, number> }> }>);
  if (split.length) {
    out.push(...split, '');
    json.workers = split;
  }
  const bar = barCheck(json.scenarios as Record<string, { rows: Array<{ id: string; median: Record<string, number> }> }>);
  if (bar.length) {
    out.push('## Against the bar of the bench issue', '', ...bar.map((b) => `- ${b}`), '');
    json.bar = bar;
  }
  out.push(`Total time: ${((Date.now() - started) / 1000).toFixed(0)} s.`, '');
  return { markdown: out.join('\n'), json: JSON.parse(JSON.stringify(json, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v))) };
}

await main();
