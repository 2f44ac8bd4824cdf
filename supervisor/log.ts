// The master's logger, and the appserver worker's (appserver/log.ts): pino's
// JSON lines ({"level":30,"time":…,"pid":…,"msg":…}, `err` through pino's
// error serializer) on stderr, written by hand. Both log a few lines per
// worker start, death, reload or app error, never one per request. Loading
// pino (and its thread-stream and sonic-boom) cost a master ~5 MB of RSS for
// that (a worker: see appserver/log.ts). test/appserver-log-lines-same-as-pino.test.ts
// compares the lines with pino's.

// Written with fs.writeSync like pino's sync destination: no process.stderr stream (another ~1 MiB).
const { writeSync } = process.getBuiltinModule('node:fs');

const writeStderr = (line: string): void => {
  writeSync(2, line);
};

const LEVELS: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Number.POSITIVE_INFINITY };

type Fields = object;

export interface MasterLog {
  debug(fields: Fields | string, msg?: string): void;
  info(fields: Fields | string, msg?: string): void;
  warn(fields: Fields | string, msg?: string): void;
  error(fields: Fields | string, msg?: string): void;
}

type ErrorLike = Error & Record<string, unknown>;

const isErrorLike = (v: unknown): v is ErrorLike => typeof (v as Error | null)?.message === 'string';

function causeOf(err: ErrorLike): ErrorLike | undefined {
  const cause = typeof err.cause === 'function' ? (err.cause as () => unknown)() : err.cause;
  return isErrorLike(cause) ? cause : undefined;
}

// The three below follow pino-std-serializers' err serializer line by line
// (messageWithCauses, stackWithCauses, errSerializer).
function messageWithCauses(err: ErrorLike, seen: Set<unknown>, skip: boolean): string {
  const message = skip ? '' : err.message || '';
  if (seen.has(err)) return `${message}: ...`;
  const cause = causeOf(err);
  if (!cause) return message;
  seen.add(err);
  const verrorStyle = typeof err.cause === 'function';
  return message + (verrorStyle ? '' : ': ') + messageWithCauses(cause, seen, verrorStyle);
}

function stackWithCauses(err: ErrorLike, seen: Set<unknown>): string {
  const stack = err.stack || '';
  if (seen.has(err)) return `${stack}\ncauses have become circular...`;
  const cause = causeOf(err);
  if (!cause) return stack;
  seen.add(err);
  return `${stack}\ncaused by: ${stackWithCauses(cause, seen)}`;
}

/** pino's `err` serializer: type, message and stack with their causes, then the error's own fields. */
function serializeError(err: ErrorLike, seen: Set<unknown>): Record<string, unknown> {
  seen.add(err);
  const out: Record<string, unknown> = {
    type: typeof err.constructor === 'function' ? err.constructor.name : err.name,
    message: messageWithCauses(err, new Set(), false),
    stack: stackWithCauses(err, new Set()),
  };
  if (Array.isArray(err.errors)) out.aggregateErrors = err.errors.map((e) => (isErrorLike(e) ? serializeError(e, seen) : e));
  for (const key in err) {
    if (out[key] !== undefined) continue;
    const value = err[key];
    if (!isErrorLike(value)) out[key] = value;
    else if (key !== 'cause' && !seen.has(value)) out[key] = serializeError(value, seen);
  }
  seen.delete(err);
  return out;
}

/** A field as pino writes it: undefined and functions left out, `err` through its error serializer. */
function fieldJson(key: string, value: unknown): string | undefined {
  if (key === 'err' && isErrorLike(value)) value = serializeError(value, new Set());
  if (value === undefined || typeof value === 'function') return undefined;
  try {
    return JSON.stringify(value);
  } catch {
    return '"[unserializable]"'; // a cycle or a BigInt: the line is still written
  }
}

/** `out` receives each line (default: written to fd 2 at once, like pino's sync destination). */
export function createMasterLog(level: string, bindings: Fields = {}, out: (line: string) => void = writeStderr): MasterLog {
  const threshold = LEVELS[level] ?? LEVELS.info;
  const base = JSON.stringify({ pid: process.pid, ...bindings }).slice(1, -1);
  const write = (n: number, fields: Fields | string, msg?: string) => {
    if (n < threshold) return;
    let line = `{"level":${n},"time":${Date.now()},${base}`;
    if (typeof fields === 'string') msg = fields;
    else
      for (const k in fields) {
        if (!Object.hasOwn(fields, k)) continue;
        const json = fieldJson(k, (fields as Record<string, unknown>)[k]);
        if (json !== undefined) line += `,${JSON.stringify(k)}:${json}`;
      }
    if (msg !== undefined) line += `,"msg":${JSON.stringify(msg)}`;
    out(`${line}}\n`);
  };
  return {
    debug: (f, m) => write(20, f, m),
    info: (f, m) => write(30, f, m),
    warn: (f, m) => write(40, f, m),
    error: (f, m) => write(50, f, m),
  };
}
