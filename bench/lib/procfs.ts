// Per-tier resource accounting from /proc: CPU time (utime+stime of every process
// of the tier, worker children included) and peak RSS (VmHWM, reset before each
// measurement through clear_refs, cross-checked by sampling VmRSS).
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';

let clkTck = 0;
function ticksPerSecond(): number {
  if (!clkTck) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

interface StatLine {
  ppid: number;
  cpuTicks: number;
  comm: string;
}

function readStat(pid: number): StatLine | null {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // comm may contain spaces and parentheses: fields are counted after the last ')'.
    const close = text.lastIndexOf(')');
    const comm = text.slice(text.indexOf('(') + 1, close);
    const f = text.slice(close + 2).split(' ');
    // f[0] = state (field 3), ppid field 4, utime field 14, stime field 15
    return { ppid: Number(f[1]), cpuTicks: Number(f[11]) + Number(f[12]), comm };
  } catch {
    return null;
  }
}

/** The root pid and all its live descendants. */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid <= 0) continue;
    const st = readStat(pid);
    if (!st) continue;
    const list = children.get(st.ppid);
    if (list) list.push(pid);
    else children.set(st.ppid, [pid]);
  }
  const out: number[] = [];
  const stack = [root];
  while (stack.length) {
    const pid = stack.pop()!;
    if (readStat(pid) === null) continue;
    out.push(pid);
    for (const c of children.get(pid) ?? []) stack.push(c);
  }
  return out;
}

/** A field of /proc/PID/status in KiB (VmHWM, VmRSS), or 0 if the process is gone. */
export function statusKb(pid: number, field: 'VmHWM' | 'VmRSS'): number {
  try {
    const text = readFileSync(`/proc/${pid}/status`, 'latin1');
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** Resets VmHWM to the current RSS (Linux ≥ 4.0: `echo 5 > /proc/PID/clear_refs`). */
export function resetPeakRss(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

export function openFds(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return 0;
  }
}

export function cpuSeconds(pid: number): number {
  const st = readStat(pid);
  return st ? st.cpuTicks / ticksPerSecond() : 0;
}

export function commOf(pid: number): string {
  return readStat(pid)?.comm ?? '?';
}

export interface TierUsage {
  /** CPU seconds used by the tier's processes during the measurement. */
  cpuSeconds: number;
  /** Sum over the tier's processes of each one's peak RSS during the measurement, KiB. */
  peakRssKb: number;
  /** Largest sampled sum of the tier's VmRSS, KiB (peaks of different processes at the same moment). */
  sampledRssKb: number;
  processes: Array<{ pid: number; comm: string; peakRssKb: number; cpuSeconds: number }>;
}

/**
 * Measures one tier (a root pid and its descendants) between start() and stop().
 * Processes that appear during the run (a respawned worker) are counted from 0.
 */
export class TierMonitor {
  private readonly startTicks = new Map<number, number>();
  private readonly peak = new Map<number, number>();
  private timer: NodeJS.Timeout | undefined;
  private sampledMax = 0;
  private readonly pids = new Set<number>();

  readonly root: number;
  constructor(root: number) {
    this.root = root;
  }

  start(sampleMs = 100): void {
    for (const pid of processTree(this.root)) {
      this.pids.add(pid);
      this.startTicks.set(pid, cpuSeconds(pid));
      resetPeakRss(pid);
    }
    this.sample();
    this.timer = setInterval(() => this.sample(), sampleMs);
  }

  private sample(): void {
    let sum = 0;
    for (const pid of this.pids) {
      const kb = statusKb(pid, 'VmRSS');
      sum += kb;
      if (kb > (this.peak.get(pid) ?? 0)) this.peak.set(pid, kb);
    }
    if (sum > this.sampledMax) this.sampledMax = sum;
  }

  /** Picks up processes born since start() (cheap enough to call once a second). */
  refresh(): void {
    for (const pid of processTree(this.root)) {
      if (!this.pids.has(pid)) {
        this.pids.add(pid);
        this.startTicks.set(pid, 0);
      }
    }
  }

  stop(): TierUsage {
    clearInterval(this.timer);
    this.refresh();
    this.sample();
    const processes: TierUsage['processes'] = [];
    let cpu = 0;
    let peakSum = 0;
    for (const pid of this.pids) {
      const used = Math.max(0, cpuSeconds(pid) - (this.startTicks.get(pid) ?? 0));
      const hwm = Math.max(statusKb(pid, 'VmHWM'), this.peak.get(pid) ?? 0);
      cpu += used;
      peakSum += hwm;
      processes.push({ pid, comm: commOf(pid), peakRssKb: hwm, cpuSeconds: used });
    }
    return { cpuSeconds: cpu, peakRssKb: peakSum, sampledRssKb: this.sampledMax, processes };
  }
}

/** Current summed VmRSS of a tier, KiB. */
export function tierRssKb(root: number): number {
  let sum = 0;
  for (const pid of processTree(root)) sum += statusKb(pid, 'VmRSS');
  return sum;
}

/** Busy CPU seconds of the whole machine since boot (all cores; /proc/stat minus idle and iowait). */
export function machineBusySeconds(): number {
  try {
    const line = readFileSync('/proc/stat', 'latin1').split('\n', 1)[0]!;
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal
    const busy = f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + (f[7] ?? 0);
    return busy / ticksPerSecond();
  } catch {
    return Number.NaN;
  }
}

/** CPU seconds of this process plus its reaped children (wrk, once it has exited). */
export function selfAndChildrenCpuSeconds(): number {
  try {
    const text = readFileSync('/proc/self/stat', 'latin1');
    const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
    // utime 14, stime 15, cutime 16, cstime 17 → f[11..14]
    return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / ticksPerSecond();
  } catch {
    return Number.NaN;
  }
}

/**
 * CPU used on the machine by anything that is neither the measured tiers nor
 * this benchmark and its load generator: other people's work on a shared
 * machine. Call start() before the measurement and stop(tierCpuSeconds) after
 * the load generator has exited; the result is in cores (CPU s per wall s).
 */
export class ForeignLoad {
  private busy0 = 0;
  private own0 = 0;
  private t0 = 0;
  start(): void {
    this.busy0 = machineBusySeconds();
    this.own0 = selfAndChildrenCpuSeconds();
    this.t0 = performance.now();
  }
  stop(tierCpuSeconds: number): number {
    const wall = (performance.now() - this.t0) / 1000;
    const foreign = machineBusySeconds() - this.busy0 - (selfAndChildrenCpuSeconds() - this.own0) - tierCpuSeconds;
    return Math.max(0, foreign / wall);
  }
}

/**
 * Waits (at most maxMs) until the machine has been nearly idle for a 300 ms
 * window: before a measurement our own configurations are idle, so any busy CPU
 * belongs to someone else sharing the machine. Returns the cores busy in the last window.
 */
export async function waitForCalm(maxMs: number, thresholdCores = 0.25): Promise<number> {
  const deadline = performance.now() + maxMs;
  for (;;) {
    const b0 = machineBusySeconds();
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, 300));
    const cores = (machineBusySeconds() - b0) / ((performance.now() - t0) / 1000);
    if (cores <= thresholdCores || performance.now() >= deadline) return cores;
  }
}
