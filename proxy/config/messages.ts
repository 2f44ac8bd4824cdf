// Config problems in the words users need: every problem of a file at once, one
// per line, as FILE:LINE:COL: KEY.PATH: WHAT IS WRONG (THE FIX), like a compiler.
// ajv's errors are translated here; positions come from the YAML document.
import type { ErrorObject } from 'ajv';
import { isMap, isScalar, isSeq, type LineCounter, type Node } from 'yaml';
import type { Schema } from './schema.ts';

export interface ConfigProblem {
  file: string;
  line?: number;
  column?: number;
  keyPath: string;
  message: string;
}

export class ConfigError extends Error {
  readonly code = 'GW_CONFIG_INVALID';
  readonly file: string;
  readonly line?: number;
  readonly column?: number;
  /** Key path of the first problem. */
  readonly keyPath: string;
  readonly problems: ConfigProblem[];
  constructor(problems: ConfigProblem[]) {
    super(problems.map(formatProblem).join('\n'));
    this.name = 'ConfigError';
    this.problems = problems;
    const first = problems[0];
    this.file = first.file;
    this.line = first.line;
    this.column = first.column;
    this.keyPath = first.keyPath;
  }
}

export function formatProblem(p: ConfigProblem): string {
  const where = p.line === undefined ? p.file : `${p.file}:${p.line}:${p.column}`;
  return p.keyPath ? `${where}: ${p.keyPath}: ${p.message}` : `${where}: ${p.message}`;
}


/** Edit distance (Levenshtein with adjacent transpositions, so "POTS" is one edit from "POST"); used only for "did you mean". */
export function editDistance(a: string, b: string): number {
  const rows: number[][] = [];
  for (let i = 0; i <= a.length; i++) {
    rows.push(new Array<number>(b.length + 1).fill(0));
    rows[i][0] = i;
  }
  for (let j = 0; j <= b.length; j++) rows[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min(rows[i - 1][j] + 1, rows[i][j - 1] + 1, rows[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, rows[i - 2][j - 2] + 1);
      rows[i][j] = d;
    }
  }
  return rows[a.length][b.length];
}

/** The closest candidate when it is close enough to be a typo (case, separators, a few letters). */
export function didYouMean(value: string, candidates: readonly string[]): string | undefined {
  const norm = (s: string) => s.toLowerCase().replace(/[-_ ]/g, '');
  let best: string | undefined;
  let bestD = Number.POSITIVE_INFINITY;
  for (const c of candidates) {
    const d = norm(c) === norm(value) ? 0 : editDistance(value.toLowerCase(), c.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  // Short words are one edit from many others: "foo" must not suggest "log".
  const limit = Math.max(1, Math.floor(value.length / 3));
  return bestD <= limit ? best : undefined;
}

export function show(v: unknown): string {
  if (v === null || v === undefined) return 'nothing';
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return String(v);
}

const TYPE_WORDS: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  integer: 'a whole number',
  boolean: 'true or false',
  object: 'a mapping',
  array: 'a list',
};

function expectedTypeWords(types: string | string[], kind: unknown): string {
  if (kind === 'duration') return 'a number of seconds or a duration like "10s"';
  if (kind === 'size') return 'a number of bytes or a size like "10mb"';
  if (kind === 'workers') return 'a number of worker processes (1 or more) or "auto" (one per core)';
  const list = (Array.isArray(types) ? types : [types]).map((t) => TYPE_WORDS[t] ?? t);
  return list.length === 1 ? list[0] : `${list.slice(0, -1).join(', ')} or ${list[list.length - 1]}`;
}

const MISSING_FIX: Record<string, string> = {
  routes: 'add routes: [{ match: { path_prefix: / }, upstream: NAME }]',
  upstreams: 'add upstreams: { NAME: { servers: [{ address: "127.0.0.1:9000" }] } }',
  upstream: 'name one of the upstreams',
  address: 'add address: "host:port" or "unix:/path.sock"',
  app: 'the app module to serve, e.g. "examples/hello.ts"',
  listen: 'add listen: "unix:/path.sock" or "HOST:PORT" (or a list of them)',
  cert: 'add the path of the PEM certificate chain',
  key: 'add the path of the PEM private key',
};

export type Seg = string | number;

export function keyPath(segs: readonly Seg[]): string {
  let out = '';
  for (const s of segs) out += typeof s === 'number' ? `[${s}]` : out ? `.${s}` : s;
  return out;
}

export function pointerToSegs(pointer: string): Seg[] {
  if (!pointer) return [];
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
}

function getAt(data: unknown, segs: readonly Seg[]): unknown {
  let cur: any = data;
  for (const s of segs) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = cur[s];
  }
  return cur;
}

/** Messages for one ajv error; null when another error at the same spot says it better. */
export function ajvMessage(err: ErrorObject, data: unknown): { segs: Seg[]; message: string; atKey?: boolean } | null {
  const segs = pointerToSegs(err.instancePath);
  const value = err.data;
  const parent = err.parentSchema as Schema | undefined;
  const kind = parent?.['x-kind'];
  switch (err.keyword) {
    case 'additionalProperties': {
      const key = (err.params as { additionalProperty: string }).additionalProperty;
      const allowed = Object.keys((err.parentSchema as Schema)?.properties ?? {});
      const guess = didYouMean(key, allowed);
      return {
        segs: [...segs, key],
        atKey: true,
        message: guess ? `unknown key (did you mean "${guess}"?)` : `unknown key (allowed: ${allowed.join(', ')})`,
      };
    }
    case 'enum': {
      const allowed = (err.params as { allowedValues: unknown[] }).allowedValues.map(String);
      const guess = typeof value === 'string' ? didYouMean(value, allowed) : undefined;
      return {
        segs,
        message: `${show(value)} is not one of ${allowed.join(', ')}${guess ? ` (did you mean "${guess}"?)` : ''}`,
      };
    }
    case 'const':
      return {
        segs,
        message: `expected true, got ${show(value)} (${segs[segs.length - 1] === 'client_address' ? 'write key: client_address' : 'write uri: true to hash on the request URI'})`,
      };
    case 'type': {
      // An upstream name given a list or scalar instead of a mapping, etc.
      return { segs, message: `expected ${expectedTypeWords((err.params as { type: string | string[] }).type, kind)}, got ${show(value)}` };
    }
    case 'pattern': {
      if (kind === 'duration' || kind === 'size' || kind === 'workers') return { segs, message: `expected ${expectedTypeWords('', kind)}, got ${show(value)}` };
      if (kind === 'listen') return { segs, message: `${show(value)} is not a listen address (use "unix:/path.sock" or "HOST:PORT")` };
      if (kind === 'name') return { segs, message: `${show(value)} must be a word of letters, digits, "_", "-" or "."` };
      if (kind === 'path') return { segs, message: `${show(value)} must start with "/" (write "/${String(value).replace(/^\/*/, '')}")` };
      if (err.keyword === 'pattern' && err.propertyName !== undefined) return null;
      return { segs, message: `${show(value)} has an unexpected form` };
    }
    case 'propertyNames':
      return null; // reported by the pattern error on the name itself
    case 'minimum':
    case 'maximum': {
      const limit = (err.params as { limit: number }).limit;
      if (kind === 'duration' || kind === 'size') return { segs, message: `must not be negative, got ${show(value)}` };
      return { segs, message: `must be ${err.keyword === 'minimum' ? 'at least' : 'at most'} ${limit}, got ${show(value)}` };
    }
    case 'minLength':
      return { segs, message: 'must not be empty' };
    case 'required': {
      const missing = (err.params as { missingProperty: string }).missingProperty;
      const fix = MISSING_FIX[missing];
      return { segs: [...segs, missing], message: `missing required key${fix ? ` (${fix})` : ''}` };
    }
    case 'minItems':
      if (segs[segs.length - 1] === 'routes') return { segs, message: 'no routes (add at least one, e.g. - { match: { path_prefix: / }, upstream: NAME })' };
      return { segs, message: 'must not be empty' };
    case 'minProperties':
      if (segs.length === 1 && segs[0] === 'upstreams') return { segs, message: 'no upstreams (define at least one, e.g. web: { servers: [{ address: "127.0.0.1:9000" }] })' };
      return { segs, message: 'must name exactly one of header, cookie, uri (e.g. { header: X-User-Id })' };
    case 'maxProperties':
      return { segs, message: `must name exactly one of ${Object.keys((parent?.properties as object) ?? {}).join(', ')}, got ${Object.keys(getAt(data, segs) as object).join(', ')}` };
    default:
      return { segs, message: err.message ?? 'is invalid' };
  }
}

// Positions: key path → the node in the YAML document.

function findNode(root: Node | null | undefined, segs: readonly Seg[]): { node: Node | null; keyNode: Node | null; found: boolean } {
  let node: Node | null = root ?? null;
  let keyNode: Node | null = null;
  for (const s of segs) {
    if (isMap(node)) {
      const pair = node.items.find((p) => (isScalar(p.key) ? String(p.key.value) : String(p.key)) === String(s));
      if (!pair) return { node, keyNode, found: false };
      keyNode = (pair.key as Node) ?? null;
      node = (pair.value as Node) ?? keyNode;
    } else if (isSeq(node) && typeof s === 'number' && s < node.items.length) {
      keyNode = null;
      node = node.items[s] as Node;
    } else {
      return { node, keyNode, found: false };
    }
  }
  return { node, keyNode, found: true };
}

export class Problems {
  readonly list: ConfigProblem[] = [];
  private readonly seen = new Set<string>();
  private readonly file: string;
  private readonly root: Node | null | undefined;
  private readonly lc: LineCounter;
  constructor(
    file: string,
    root: Node | null | undefined,
    lc: LineCounter,
  ) {
    this.file = file;
    this.root = root;
    this.lc = lc;
  }

  /** atKey: point at the key itself (unknown keys) rather than its value. */
  add(segs: readonly Seg[], message: string, atKey = false): void {
    const path = keyPath(segs);
    const dedupe = `${path}\0${message}`;
    if (this.seen.has(dedupe)) return;
    this.seen.add(dedupe);
    const { node, keyNode, found } = findNode(this.root, segs);
    // A missing key is pointed at its parent's key ("api:"), the line a user adds it under.
    const target = found ? (atKey ? (keyNode ?? node) : (node ?? keyNode)) : (keyNode ?? node);
    const offset = target?.range?.[0] ?? 0;
    const pos = this.lc.linePos(offset);
    this.list.push({ file: this.file, line: pos.line, column: pos.col, keyPath: path, message });
  }

  /** Problems in file order, like a compiler's. */
  sorted(): ConfigProblem[] {
    return [...this.list].sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.column ?? 0) - (b.column ?? 0));
  }
}

