// The worker's logger: pino's JSON line shape on stderr (stdout carries only
// the human "listening on" line), written by the same few lines as the
// master's (supervisor/log.ts). A worker logs its lifecycle and the odd
// warning or app error, never a line per request. pino with sonic-boom,
// thread-stream and the builtins they load costs a bare Node process 14 MB of
// RSS; a worker today loads most of those builtins anyway (undici, for the
// Fetch globals, brings worker_threads, assert, zlib...), so the saving there
// is ~1 MB until it stops doing so.
// test/appserver-log-lines-same-as-pino.test.ts keeps the lines pino's.
import { createMasterLog, type MasterLog } from '../supervisor/log.ts';

export type Logger = MasterLog;

let logger: Logger | null = null;

/** Workers tag their lines with their worker id (`bindings`). */
export function createLogger(level: string, bindings: Record<string, unknown> = {}): Logger {
  logger = createMasterLog(level, bindings);
  return logger;
}

export function getLogger(): Logger {
  return logger ?? createLogger(process.env.GATEWIRE_LOG_LEVEL ?? 'info');
}
