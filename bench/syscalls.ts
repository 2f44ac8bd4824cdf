// `node --import ./bin/typescript-loader.js bench/syscalls.ts [--configs 2,3,4] [--route /hello] [--seconds 3]`
//
// System calls per request of each tier under wrk load (strace -c -f attached to
// every process of the tier), and user vs kernel CPU per request from /proc. Says
// whether a proxy's cost is its own JavaScript or the kernel's socket work, which a
// sampling profiler cannot tell apart (time inside writev includes waiting for a core).
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { tempDir } from '../test/helpers/net.ts';
import { requireTool } from '../test/helpers/tools.ts';
import { selectConfigurations } from './lib/configs.ts';
import { processTree } from './lib/procfs.ts';
import { runWrk, writePostScript } from './lib/wrk.ts';

const { values: args } = parseArgs({
  options: {
    configs: { type: 'string', default: '2,3,4' },
    route: { type: 'string', default: '/hello' },
    seconds: { type: 'string', default: '3' },
    // POST this many bytes per request (use with --route /echo)
    post: { type: 'string' },
  },
});

const clk = 100; // USER_HZ: /proc/PID/stat times are in 1/100 s on Linux
function userSys(pid: number): [number, number] {
  try {
    const t = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const f = t.slice(t.lastIndexOf(')') + 2).split(' ');
    return [Number(f[11]) / clk, Number(f[12]) / clk];
  } catch {
    return [0, 0];
  }
}

/** strace -c's table: "% time seconds usecs/call calls [errors] syscall"; the "total" line is skipped. */
export function parseStraceSummary(text: string): Array<{ name: string; calls: number }> {
  const out: Array<{ name: string; calls: number }> = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 5 || !/^[\d.]+$/.test(f[0]!) || f[f.length - 1] === 'total') continue;
    out.push({ name: f[f.length - 1]!, calls: Number(f[3]) });
  }
  return out;
}

const strace = requireTool('strace');
const lines: string[] = [];
for (const c of selectConfigurations(args.configs)) {
  const { dir, cleanup } = tempDir('gwx-');
  const r = await c.start({ dir, group: 'rps' });
  try {
    const url = `http://${r.host}:${r.port}${args.route}`;
    const script = args.post ? writePostScript(dir, Number(args.post)) : undefined;
    await runWrk({ url, durationS: 1, script });
    const tiers = Object.entries(r.tiers)
      .filter((e): e is [string, number] => e[1] !== undefined)
      .map(([tier, root]) => ({ tier, pids: processTree(root) }));
    // CPU split first, without strace (it slows the traced process down).
    const before = tiers.map((t) => t.pids.map(userSys));
    const plain = await runWrk({ url, durationS: Number(args.seconds), script });
    const cpu = tiers.map((t, i) => {
      let u = 0;
      let s = 0;
      t.pids.forEach((p, j) => {
        const [u1, s1] = userSys(p);
        u += u1 - before[i]![j]![0];
        s += s1 - before[i]![j]![1];
      });
      return `${t.tier} user ${((u * 1e6) / plain.result.requests).toFixed(0)} µs + kernel ${((s * 1e6) / plain.result.requests).toFixed(0)} µs`;
    });
    const tracers = tiers.map((t) => ({
      tier: t.tier,
      file: `${dir}/${t.tier}.strace`,
      child: spawn(strace, ['-c', '-f', '-o', `${dir}/${t.tier}.strace`, ...t.pids.flatMap((p) => ['-p', String(p)])], { stdio: 'ignore' }),
    }));
    await new Promise((res) => setTimeout(res, 500));
    const traced = await runWrk({ url, durationS: Number(args.seconds), script });
    for (const t of tracers) t.child.kill('SIGINT');
    await Promise.all(tracers.map((t) => new Promise((res) => t.child.once('exit', res))));
    lines.push(`(${c.id}) ${c.label} — ${args.post ? `POST ${args.post} bytes to` : 'GET'} ${args.route}: ${plain.result.rps.toFixed(0)} req/s; CPU per request: ${cpu.join('; ')}`);
    for (const t of tracers) {
      const calls = parseStraceSummary(readFileSync(t.file, 'utf8')).sort((a, b) => b.calls - a.calls);
      const n = traced.result.requests;
      const total = calls.reduce((a, b) => a + b.calls, 0);
      lines.push(`    ${t.tier}: ${(total / n).toFixed(2)} syscalls/request — ${calls.slice(0, 6).map((x) => `${x.name} ${(x.calls / n).toFixed(2)}`).join(', ')}`);
    }
  } finally {
    await r.stop();
    cleanup();
  }
}
process.stdout.write(`${lines.join('\n')}\n`);
