// A Dockerfile reader for the deploy tests: they read the build steps and
// check them against what the test suite itself runs, without an engine (the
// image itself is built and run in deploy-compose-scales-on-a-real-engine). Handles what our Dockerfiles use: comments, parser
// directives, `\` continuations, JSON (exec) and shell forms, multi-stage FROM.

export interface Instruction {
  /** Upper-case keyword: FROM, RUN, COPY, ... */
  op: string;
  /** Raw text after the keyword, continuations joined with a space. */
  raw: string;
  /** The exec-form array when the arguments are a JSON array, else null. */
  json: string[] | null;
  /** `--name=value` flags before the arguments (COPY --from=build, HEALTHCHECK --interval=10s). */
  flags: Record<string, string>;
  /** Arguments after the flags (shell form split on blanks; HEALTHCHECK keeps `CMD ...` in raw). */
  args: string[];
  line: number;
}

export interface Stage {
  from: string;
  name: string | null;
  instructions: Instruction[];
}

export function parseDockerfile(text: string): Stage[] {
  const lines = text.split('\n');
  const instructions: Instruction[] = [];
  let i = 0;
  while (i < lines.length) {
    const startLine = i + 1;
    let line = lines[i++];
    if (/^\s*(#|$)/.test(line)) continue;
    // Join continuation lines; comment lines inside a continuation are dropped, as Docker does.
    while (/\\\s*$/.test(line) && i < lines.length) {
      const next = lines[i++];
      if (/^\s*#/.test(next)) continue;
      line = `${line.replace(/\\\s*$/, '')} ${next.trim()}`;
    }
    const m = /^\s*(\w+)\s+(.*)$/s.exec(line);
    if (!m) throw new Error(`Dockerfile line ${startLine}: cannot parse ${JSON.stringify(line)}`);
    const op = m[1].toUpperCase();
    let rest = m[2].trim();
    const flags: Record<string, string> = {};
    for (;;) {
      const f = /^--([\w-]+)(?:=(\S+))?\s+/.exec(rest);
      if (!f) break;
      flags[f[1]] = f[2] ?? 'true';
      rest = rest.slice(f[0].length);
    }
    let json: string[] | null = null;
    if (rest.startsWith('[')) {
      try {
        const v = JSON.parse(rest);
        if (Array.isArray(v) && v.every((x) => typeof x === 'string')) json = v;
      } catch {
        json = null;
      }
    }
    instructions.push({ op, raw: rest, json, flags, args: json ?? rest.split(/\s+/).filter(Boolean), line: startLine });
  }
  const stages: Stage[] = [];
  for (const ins of instructions) {
    if (ins.op === 'FROM') {
      const asIdx = ins.args.findIndex((a) => a.toUpperCase() === 'AS');
      stages.push({ from: ins.args[0], name: asIdx >= 0 ? ins.args[asIdx + 1] : null, instructions: [] });
    } else if (stages.length === 0) {
      if (ins.op !== 'ARG') throw new Error(`Dockerfile line ${ins.line}: ${ins.op} before FROM`);
    } else stages[stages.length - 1].instructions.push(ins);
  }
  return stages;
}

/** The shell commands of a stage's RUN lines, split on `&&` and `;`, blanks normalised. */
export function runCommands(stage: Stage): string[] {
  return stage.instructions
    .filter((i) => i.op === 'RUN')
    .flatMap((i) => (i.json ? [i.json.join(' ')] : i.raw.split(/&&|;/)))
    .map((c) => c.trim().replace(/\s+/g, ' '))
    .filter(Boolean);
}

/** The last value of an instruction in a stage (ENTRYPOINT, CMD, USER, WORKDIR...), or undefined. */
export function lastOf(stage: Stage, op: string): Instruction | undefined {
  return stage.instructions.filter((i) => i.op === op).at(-1);
}

/**
 * Does a .dockerignore exclude `p` (a path relative to the context)? Implements
 * the subset our .dockerignore uses: plain paths, `*` globs within one path
 * segment, `**`, and `!` exceptions, last match wins (Docker's rule).
 */
export function dockerIgnored(patterns: string[], p: string): boolean {
  let ignored = false;
  for (let pat of patterns) {
    pat = pat.trim();
    if (pat === '' || pat.startsWith('#')) continue;
    const negate = pat.startsWith('!');
    if (negate) pat = pat.slice(1);
    pat = pat.replace(/^\/+|\/+$/g, '');
    const re = new RegExp(
      `^${pat
        .split('/')
        .map((seg) => (seg === '**' ? '.*' : seg.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]')))
        .join('/')}(/.*)?$`,
    );
    if (re.test(p)) ignored = !negate;
  }
  return ignored;
}
