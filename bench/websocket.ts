// The WebSocket scenarios of `npm run bench` (--only ws,ws-idle), also
// runnable alone: `node --import ./bin/typescript-loader.js bench/websocket.ts [--quick]`.
//
//   ws       64 connections, each echoing 1 KiB messages one at a time (closed loop), through
//            (W1) gatewire proxy → gatewire serve (native, Unix socket, a ws server on an exported http.Server),
//            (W2) NGINX proxy_pass with the Upgrade headers → the same ws server on node:http,
//            (W3) that ws server alone;
//            messages/s, p50/p99 round trip, proxy CPU per message, peak RSS per tier,
//            interleaved rounds (W1 W2 W3 W1 W2 W3 …), medians.
//   ws-idle  10,000 idle WebSockets held through the gatewire proxy: the proxy's RSS per connection.
//
// Targets (issue 13): W1 messages/s ≥ 1.0× W2's; ≤ 8 KiB of proxy RSS per idle tunnel.
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { freePort, tempDir } from '../test/helpers/net.ts';
import { type Proc, ROOT } from '../test/helpers/procs.ts';
import { gatewire, nodeApp, ready, type StartOptions, startNginx } from './lib/configs.ts';
import { TierMonitor, type TierUsage, tierRssKb, waitForCalm } from './lib/procfs.ts';
import { median } from './lib/stats.ts';

const TYPESCRIPT_LOADER = path.join(ROOT, 'bin/typescript-loader.js');
const LOAD = path.join(ROOT, 'bench/lib/ws-load.ts');

interface WsRunning {
  url: string;
  tiers: { proxy?: number; app: number };
  procs: Proc[];
}

interface WsConfig {
  id: string;
  label: string;
  start(o: StartOptions, opts: { maxStreams?: number }): Promise<WsRunning>;
}

async function standalone(o: StartOptions): Promise<{ proc: Proc; port: number }> {
  const port = await freePort();
  const proc = nodeApp(o, 'ws-echo-standalone.ts', [`127.0.0.1:${port}`]);
  await ready(proc, `127.0.0.1:${port}`);
  return { proc, port };
}

export const WS_CONFIGS: WsConfig[] = [
  {
    id: 'W1',
    label: 'gatewire proxy → gatewire serve (native, Unix socket) → ws on an exported http.Server',
    async start(o, opts) {
      const sock = `unix:${path.join(o.dir, 'app.sock')}`;
      const app = gatewire(['serve', path.join(ROOT, 'bench/apps/ws-echo.ts'), '--listen', sock, '--workers', '1', '--max-streams', String(opts.maxStreams ?? 128)], o);
      await ready(app, sock);
      const port = await freePort();
      const file = path.join(o.dir, 'proxy.json');
      // The default config (access log on), as users run it.
      writeFileSync(
        file,
        JSON.stringify({
          listen: { host: '127.0.0.1', port },
          admin: false,
          log: { level: 'info', access: true },
          routes: [{ match: { path_prefix: '/' }, upstream: 'app' }],
          upstreams: { app: { protocol: 'gatewire', servers: [{ address: sock }] } },
        }),
      );
      const proxy = gatewire(['proxy', '--config', file], o);
      await ready(proxy, `127.0.0.1:${port}`);
      return { url: `ws://127.0.0.1:${port}/`, tiers: { proxy: proxy.child.pid as number, app: app.child.pid as number }, procs: [proxy, app] };
    },
  },
  {
    id: 'W2',
    label: 'nginx proxy_pass (Upgrade headers) → the ws server on node:http',
    async start(o) {
      const app = await standalone(o);
      const nginx = await startNginx(
        o,
        `server 127.0.0.1:${app.port};`,
        'proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection "upgrade"; proxy_read_timeout 3600s;',
      );
      return { url: `ws://127.0.0.1:${nginx.port}/`, tiers: { proxy: nginx.proc.child.pid as number, app: app.proc.child.pid as number }, procs: [nginx.proc, app.proc] };
    },
  },
  {
    id: 'W3',
    label: 'the ws server on node:http alone (no proxy)',
    async start(o) {
      const app = await standalone(o);
      return { url: `ws://127.0.0.1:${app.port}/`, tiers: { app: app.proc.child.pid as number }, procs: [app.proc] };
    },
  },
];

function runLoad(args: string[]): { done: Promise<any>; child: ReturnType<typeof spawn> } {
  const child = spawn(process.execPath, ['--import', TYPESCRIPT_LOADER, LOAD, ...args], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout?.on('data', (d) => {
    out += d;
  });
  child.stderr?.on('data', (d) => {
    err += d;
  });
  const done = new Promise<any>((resolve, reject) => {
    const check = () => {
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line) resolve(JSON.parse(line));
    };
    child.stdout?.on('data', check);
    child.once('exit', (code) => {
      check();
      reject(new Error(`ws-load exited with ${code}: ${err.slice(-2000)}`));
    });
  });
  return { done, child };
}

interface EchoSample {
  msgsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  proxyCpuUs: number;
  appCpuUs: number;
  proxyRssMiB: number;
  appRssMiB: number;
}

async function stopAll(procs: Proc[]): Promise<void> {
  for (const p of procs) await p.stop(5000);
}

async function echoRound(c: WsConfig, seconds: number, calmMs: number): Promise<EchoSample> {
  const { dir, cleanup } = tempDir('gwbws-');
  const r = await c.start({ dir, group: 'rps' }, {});
  try {
    await runLoad(['echo', r.url, '64', '1', '1024']).done; // warm-up
    if (calmMs > 0) await waitForCalm(calmMs);
    const proxy = r.tiers.proxy ? new TierMonitor(r.tiers.proxy) : undefined;
    const app = new TierMonitor(r.tiers.app);
    proxy?.start();
    app.start();
    const res = await runLoad(['echo', r.url, '64', String(seconds), '1024']).done;
    const p: TierUsage | undefined = proxy?.stop();
    const a = app.stop();
    return {
      msgsPerSec: res.messages / res.seconds,
      p50Ms: res.p50Ms,
      p99Ms: res.p99Ms,
      errors: res.errors,
      proxyCpuUs: p ? (p.cpuSeconds * 1e6) / res.messages : Number.NaN,
      appCpuUs: (a.cpuSeconds * 1e6) / res.messages,
      proxyRssMiB: p ? p.peakRssKb / 1024 : Number.NaN,
      appRssMiB: a.peakRssKb / 1024,
    };
  } finally {
    await stopAll(r.procs);
    cleanup();
  }
}

async function idleRun(count: number): Promise<{ held: number; errors: number; beforeMiB: number; halfMiB: number; afterMiB: number; perConnKiB: number; slopeKiB: number }> {
  const { dir, cleanup } = tempDir('gwbws-');
  const c = WS_CONFIGS[0];
  const r = await c.start({ dir, group: 'idle' }, { maxStreams: 16_384 });
  try {
    await runLoad(['echo', r.url, '4', '1', '64']).done; // warm: the proxy's code paths and one native connection
    await new Promise((res) => setTimeout(res, 500));
    const before = tierRssKb(r.tiers.proxy as number);
    // Two halves: the second half's cost per connection (the slope) is free of what the warm-up
    // left in the heap (a grown young generation the first tunnels then fill).
    const half = Math.floor(count / 2);
    const first = runLoad(['idle', r.url, String(half)]);
    const res1 = await first.done;
    await new Promise((res) => setTimeout(res, 1000));
    const mid = tierRssKb(r.tiers.proxy as number);
    const second = runLoad(['idle', r.url, String(count - half)]);
    const res2 = await second.done;
    await new Promise((res) => setTimeout(res, 1000));
    const after = tierRssKb(r.tiers.proxy as number);
    first.child.stdin?.end();
    second.child.stdin?.end();
    const held = res1.held + res2.held;
    return {
      held,
      errors: res1.errors + res2.errors,
      beforeMiB: before / 1024,
      halfMiB: mid / 1024,
      afterMiB: after / 1024,
      perConnKiB: held > 0 ? (after - before) / held : Number.NaN,
      slopeKiB: res2.held > 0 ? (after - mid) / res2.held : Number.NaN,
    };
  } finally {
    await stopAll(r.procs);
    cleanup();
  }
}

function fmt(n: number, digits = 0): string {
  return Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : '–';
}

/** Runs the selected WebSocket scenarios; returns their Markdown report. */
export async function runWebSocketBench(opts: { quick: boolean; rounds: number; seconds: number; echo: boolean; idle: boolean; log?: (s: string) => void }): Promise<{ markdown: string; json: object }> {
  const log = opts.log ?? ((s: string) => process.stderr.write(`${s}\n`));
  let md = '';
  const json: Record<string, unknown> = {};
  if (opts.echo) {
    const samples = new Map<string, EchoSample[]>(WS_CONFIGS.map((c) => [c.id, []]));
    for (let round = 1; round <= opts.rounds; round++) {
      for (const c of WS_CONFIGS) {
        log(`ws round ${round}/${opts.rounds}: ${c.id} ${c.label}`);
        try {
          samples.get(c.id)?.push(await echoRound(c, opts.seconds, opts.quick ? 0 : 500));
        } catch (err) {
          log(`  ${c.id} failed: ${(err as Error).message}`);
        }
      }
    }
    const med = (id: string, k: keyof EchoSample) => median((samples.get(id) ?? []).map((s) => s[k]));
    const nginx = med('W2', 'msgsPerSec');
    md += `\n### WebSocket echo — 64 connections, 1 KiB messages, one in flight per connection (medians of ${opts.rounds} interleaved round(s) of ${opts.seconds} s)\n\n`;
    md += '| config | messages/s | ×(W2 nginx) | p50 ms | p99 ms | errors | proxy CPU µs/msg | app CPU µs/msg | proxy peak RSS MiB | app peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|\n';
    const rows: unknown[] = [];
    for (const c of WS_CONFIGS) {
      const row = {
        id: c.id,
        label: c.label,
        msgsPerSec: med(c.id, 'msgsPerSec'),
        ratioNginx: med(c.id, 'msgsPerSec') / nginx,
        p50Ms: med(c.id, 'p50Ms'),
        p99Ms: med(c.id, 'p99Ms'),
        errors: (samples.get(c.id) ?? []).reduce((a, s) => a + s.errors, 0),
        proxyCpuUs: med(c.id, 'proxyCpuUs'),
        appCpuUs: med(c.id, 'appCpuUs'),
        proxyRssMiB: med(c.id, 'proxyRssMiB'),
        appRssMiB: med(c.id, 'appRssMiB'),
        rounds: samples.get(c.id),
      };
      rows.push(row);
      md += `| (${c.id}) ${c.label} | ${fmt(row.msgsPerSec)} | ${fmt(row.ratioNginx, 2)} | ${fmt(row.p50Ms, 2)} | ${fmt(row.p99Ms, 2)} | ${row.errors} | ${fmt(row.proxyCpuUs, 1)} | ${fmt(row.appCpuUs, 1)} | ${fmt(row.proxyRssMiB, 1)} | ${fmt(row.appRssMiB, 1)} |\n`;
    }
    const w1 = med('W1', 'msgsPerSec') / nginx;
    md += `\nTarget: gatewire messages/s ≥ 1.0× nginx's — ${Number.isFinite(w1) ? `${w1.toFixed(2)}×: ${w1 >= 1 ? 'met' : 'NOT met'}` : 'not measured'}.\n`;
    json.ws = { rows };
  }
  if (opts.idle) {
    const count = opts.quick ? 2000 : 10_000;
    log(`ws-idle: ${count} idle WebSockets through the gatewire proxy`);
    try {
      const r = await idleRun(count);
      md += `\n### Idle WebSockets through gatewire proxy → gatewire serve\n\n| held | errors | proxy RSS before MiB | at half MiB | held MiB | KiB per idle tunnel (whole) | KiB per idle tunnel (second half) |\n|---|---|---|---|---|---|---|\n`;
      md += `| ${r.held} | ${r.errors} | ${fmt(r.beforeMiB, 1)} | ${fmt(r.halfMiB, 1)} | ${fmt(r.afterMiB, 1)} | ${fmt(r.perConnKiB, 2)} | ${fmt(r.slopeKiB, 2)} |\n`;
      const worst = Math.max(r.perConnKiB, r.slopeKiB);
      md += `\nTarget: ≤ 8 KiB per idle tunnel in the proxy (the larger of the two figures) — ${worst.toFixed(2)} KiB: ${worst <= 8 ? 'met' : 'NOT met'}.\n`;
      json.wsIdle = r;
    } catch (err) {
      log(`  ws-idle failed: ${(err as Error).message}`);
      md += `\n### Idle WebSockets: failed: ${(err as Error).message}\n`;
    }
  }
  return { markdown: md, json };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, rounds: { type: 'string' }, duration: { type: 'string' }, only: { type: 'string' } } });
  const only = values.only ? new Set(values.only.split(',')) : null;
  const quick = values.quick === true;
  const { markdown } = await runWebSocketBench({
    quick,
    rounds: Number(values.rounds ?? (quick ? 1 : 3)),
    seconds: Number(values.duration ?? (quick ? 2 : 5)),
    echo: only === null || only.has('ws'),
    idle: only === null || only.has('ws-idle'),
  });
  process.stdout.write(markdown);
}
