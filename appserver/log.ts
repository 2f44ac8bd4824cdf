// The worker's logger: pino's JSON line shape on stderr (stdout carries only
// the human "listening on" line), written by the same few lines as the
// master's (supervisor/log.ts). A worker logs its lifecycle and the odd
// warning or app error, never a line per request; pino (with sonic-boom,
// thread-stream, worker_threads, assert and the fs facade it brings) cost
// every worker ~14 MB of RSS for that, a third of its budget above node:http.
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
