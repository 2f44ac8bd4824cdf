// The master's logger: pino's JSON line shape ({"level":30,"time":…,"pid":…,
// "msg":…}) on stderr, written by hand. A master only supervises: a few lines
// per worker start, death or reload. Loading pino (and its thread-stream and
// sonic-boom) would cost it ~5 MB of RSS for that, in a process whose whole
// budget above a bare Node is a few MB; the workers keep pino.

// Written with fs.writeSync like pino's sync destination: no process.stderr stream (another ~1 MiB).
const { writeSync } = process.getBuiltinModule('node:fs');

const LEVELS: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Number.POSITIVE_INFINITY };

type Fields = object;

export interface MasterLog {
  debug(fields: Fields | string, msg?: string): void;
  info(fields: Fields | string, msg?: string): void;
  warn(fields: Fields | string, msg?: string): void;
  error(fields: Fields | string, msg?: string): void;
}

function serialize(value: unknown): unknown {
  if (value instanceof Error) {
    const code = (value as NodeJS.ErrnoException).code;
    return { type: value.name, message: value.message, stack: value.stack, ...(code ? { code } : {}) };
  }
  return value;
}

export function createMasterLog(level: string, bindings: Fields = {}): MasterLog {
  const threshold = LEVELS[level] ?? LEVELS.info;
  const base = JSON.stringify({ pid: process.pid, ...bindings }).slice(1, -1);
  const write = (n: number, fields: Fields | string, msg?: string) => {
    if (n < threshold) return;
    let line = `{"level":${n},"time":${Date.now()},${base}`;
    if (typeof fields === 'string') msg = fields;
    else for (const [k, v] of Object.entries(fields)) line += `,${JSON.stringify(k)}:${JSON.stringify(serialize(v)) ?? 'null'}`;
    if (msg !== undefined) line += `,"msg":${JSON.stringify(msg)}`;
    writeSync(2, `${line}}\n`);
  };
  return {
    debug: (f, m) => write(20, f, m),
    info: (f, m) => write(30, f, m),
    warn: (f, m) => write(40, f, m),
    error: (f, m) => write(50, f, m),
  };
}
