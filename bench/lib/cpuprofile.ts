// Reads V8 .cpuprofile files (node --cpu-prof) and says where the time goes:
// self time per function and per package/file area, as a share of the busy
// (non-idle) samples.

export interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

export interface CpuProfile {
  nodes: Array<{ id: number; callFrame: CallFrame; children?: number[] }>;
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface SelfTime {
  name: string;
  where: string;
  area: string;
  us: number;
  /** Percent of busy (non-idle, non-GC-less) time. */
  pct: number;
}

export interface ProfileSummary {
  totalUs: number;
  idleUs: number;
  busyUs: number;
  functions: SelfTime[];
  areas: Array<{ area: string; us: number; pct: number }>;
  /** Inclusive time (self + callees) of functions in this repo and in npm packages: which entry points cost. */
  inclusive: SelfTime[];
}

const PSEUDO = new Set(['(idle)', '(program)', '(garbage collector)', '(root)']);

/** Groups a script URL into something a reader acts on: a package, node internals, or a file of this repo. */
export function areaOf(url: string, functionName: string): string {
  if (!url) return PSEUDO.has(functionName) ? functionName : '(native / V8 builtins)';
  if (url.startsWith('node:')) return 'node: internals';
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 14).split('/');
    return rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  const m = /\/(protocol|proxy|appserver|bench|cli|examples)\/(.+)$/.exec(url);
  if (m) return `${m[1]}/${m[2]}`;
  return url.replace(/^file:\/\//, '');
}

function shortUrl(url: string): string {
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) return url.slice(nm + 14);
  const m = /\/((?:protocol|proxy|appserver|bench|cli|examples)\/.+)$/.exec(url);
  return m ? m[1]! : url.replace(/^file:\/\//, '');
}

export function summarizeProfile(p: CpuProfile, top = 25): ProfileSummary {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  // timeDeltas[i] is the time elapsed before sample i: it belongs to sample i-1's
  // node; the first delta is the gap since the profile started (ignored).
  for (let i = 0; i < p.samples.length - 1; i++) {
    const id = p.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + Math.max(0, p.timeDeltas[i + 1] ?? 0));
  }
  const fn = new Map<string, SelfTime>();
  const areas = new Map<string, number>();
  let total = 0;
  let idle = 0;
  for (const [id, us] of selfUs) {
    const cf = byId.get(id)!.callFrame;
    total += us;
    if (cf.functionName === '(idle)') {
      idle += us;
      continue;
    }
    const name = cf.functionName || '(anonymous)';
    const where = cf.url ? `${shortUrl(cf.url)}:${cf.lineNumber + 1}` : '';
    const key = `${name}@${where}`;
    const area = areaOf(cf.url, name);
    const entry = fn.get(key) ?? { name, where, area, us: 0, pct: 0 };
    entry.us += us;
    fn.set(key, entry);
    areas.set(area, (areas.get(area) ?? 0) + us);
  }
  const busy = total - idle;
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const incl = new Map<string, SelfTime>();
  for (const [id, us] of selfUs) {
    if (byId.get(id)!.callFrame.functionName === '(idle)') continue;
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const cf = byId.get(cur)!.callFrame;
      const area = areaOf(cf.url, cf.functionName);
      if (!cf.url || cf.url.startsWith('node:') || area === 'tsx') continue;
      const name = cf.functionName || '(anonymous)';
      const where = `${shortUrl(cf.url)}:${cf.lineNumber + 1}`;
      const key = `${name}@${where}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const entry = incl.get(key) ?? { name, where, area, us: 0, pct: 0 };
      entry.us += us;
      incl.set(key, entry);
    }
  }
  const inclusive = [...incl.values()].sort((a, b) => b.us - a.us).slice(0, top);
  for (const f of inclusive) f.pct = busy > 0 ? (100 * f.us) / busy : 0;
  const functions = [...fn.values()].sort((a, b) => b.us - a.us).slice(0, top);
  for (const f of functions) f.pct = busy > 0 ? (100 * f.us) / busy : 0;
  return {
    totalUs: total,
    idleUs: idle,
    busyUs: busy,
    functions,
    inclusive,
    areas: [...areas.entries()].map(([area, us]) => ({ area, us, pct: busy > 0 ? (100 * us) / busy : 0 })).sort((a, b) => b.us - a.us),
  };
}
