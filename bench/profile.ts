// `node --import ./bin/typescript-loader.js bench/profile.ts [--configs 2,5,7] [--seconds 15] [--route /hello] [--out DIR]`
//
// Runs a gatewire configuration under wrk load with `node --cpu-prof` on every
// gatewire process (proxy, appserver master and workers), then prints where the
// time goes: top self-time functions and packages per process, as a share of
// the busy (non-idle) samples. The profiles stay in DIR for Chrome DevTools /
// speedscope. Startup (module loading, tsx) is in the profile too; the load
// runs long enough to dwarf it, and it shows up under its own package names.
import { readdirSync, readFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { tempDir } from '../test/helpers/net.ts';
import { ROOT } from '../test/helpers/procs.ts';
import { selectConfigurations } from './lib/configs.ts';
import { type CpuProfile, summarizeProfile } from './lib/cpuprofile.ts';
import { processTree, TierMonitor } from './lib/procfs.ts';
import { markdownTable } from './lib/table.ts';
import { runWrk, writePostScript } from './lib/wrk.ts';

const { values: args } = parseArgs({
  options: {
    configs: { type: 'string', default: '2' },
    seconds: { type: 'string', default: '15' },
    route: { type: 'string', default: '/hello' },
    top: { type: 'string', default: '20' },
    // POST this many bytes per request (use with --route /echo)
    post: { type: 'string' },
    out: { type: 'string', default: path.join(ROOT, '.tmp/profiles') }, // .tmp/ is git-ignored
  },
});

const out: string[] = [];
for (const c of selectConfigurations(args.configs)) {
  const profDir = path.join(path.resolve(args.out!), `config-${c.id}-${Date.now()}`);
  mkdirSync(profDir, { recursive: true });
  const { dir, cleanup } = tempDir('gwp-');
  const running = await c.start({ dir, group: 'rps', nodeFlags: ['--cpu-prof', `--cpu-prof-dir=${profDir}`] });
  const roles = new Map<number, string>();
  let wrkLine = '';
  try {
    if (running.tiers.proxy) for (const pid of processTree(running.tiers.proxy)) roles.set(pid, 'proxy');
    for (const pid of processTree(running.tiers.app)) roles.set(pid, pid === running.tiers.app ? 'app (master)' : 'app (worker)');
    const url = `http://${running.host}:${running.port}${args.route}`;
    const script = args.post ? writePostScript(dir, Number(args.post)) : undefined;
    await runWrk({ url, durationS: 2, script });
    const proxy = running.tiers.proxy ? new TierMonitor(running.tiers.proxy) : undefined;
    const app = new TierMonitor(running.tiers.app);
    proxy?.start();
    app.start();
    const { result } = await runWrk({ url, durationS: Number(args.seconds), script });
    const pu = proxy?.stop();
    const au = app.stop();
    const perReq = (s: number | undefined) => (s === undefined ? '–' : ((s * 1e6) / result.requests).toFixed(0));
    wrkLine =
      `${result.rps.toFixed(0)} req/s, p99 ${result.p99Ms.toFixed(2)} ms, errors ${result.errors}; ` +
      `CPU per request (profiler on): proxy ${perReq(pu?.cpuSeconds)} µs, app ${perReq(au.cpuSeconds)} µs`;
  } finally {
    await running.stop();
    cleanup();
  }
  // Workers write their profile when they exit; give the master's shutdown a moment.
  await new Promise((r) => setTimeout(r, 500));
  out.push(`## (${c.id}) ${c.label} — ${args.post ? `POST ${args.post} bytes to` : 'GET'} ${args.route}, ${args.seconds} s`, '', wrkLine, '');
  for (const file of readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile')).sort()) {
    const [, , , pidText, tid] = file.split('.');
    const pid = Number(pidText);
    // Thread 1 is Node's module-loader hooks thread (tsx): startup only.
    if (tid !== '0') continue;
    const role = roles.get(pid) ?? 'other';
    const summary = summarizeProfile(JSON.parse(readFileSync(path.join(profDir, file), 'utf8')) as CpuProfile, Number(args.top));
    if (summary.busyUs < 0.05 * summary.totalUs && role.includes('master')) {
      out.push(`### ${role} pid ${pid}: ${(summary.busyUs / 1000).toFixed(0)} ms busy of ${(summary.totalUs / 1000).toFixed(0)} ms — idle, skipped`, '');
      continue;
    }
    out.push(
      `### ${role} pid ${pid}: ${(summary.busyUs / 1000).toFixed(0)} ms busy of ${(summary.totalUs / 1000).toFixed(0)} ms (${path.relative(ROOT, path.join(profDir, file))})`,
      '',
    );
    out.push(
      markdownTable(
        [
          { key: 'pct', title: 'self %', digits: 1 },
          { key: 'where', title: 'where', numeric: false },
          { key: 'area', title: 'area', numeric: false },
        ],
        summary.functions.map((f, i) => ({ id: String(i + 1), label: f.name, values: { pct: f.pct, where: f.where, area: f.area } })),
      ).replace('| configuration |', '| function |'),
      '',
    );
    out.push(
      markdownTable(
        [
          { key: 'pct', title: 'inclusive %', digits: 1 },
          { key: 'where', title: 'where', numeric: false },
        ],
        summary.inclusive.map((f, i) => ({ id: String(i + 1), label: f.name, values: { pct: f.pct, where: f.where } })),
      ).replace('| configuration |', '| function (this repo and npm packages) |'),
      '',
    );
    out.push(
      markdownTable(
        [{ key: 'pct', title: 'self %', digits: 1 }],
        summary.areas.slice(0, 12).map((a, i) => ({ id: String(i + 1), label: a.area, values: { pct: a.pct } })),
      ).replace('| configuration |', '| area |'),
      '',
    );
  }
}
process.stdout.write(`${out.join('\n')}\n`);
