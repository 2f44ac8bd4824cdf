// One pino logger per process, JSON lines on stderr (stdout carries only the
// human "listening on" line). Workers tag their lines with their worker id.
import pino from 'pino';

export type Logger = pino.Logger;

let logger: Logger | null = null;

export function createLogger(level: string, bindings: Record<string, unknown> = {}): Logger {
  logger = pino({ level, base: { pid: process.pid, ...bindings } }, pino.destination({ fd: 2, sync: true }));
  return logger;
}

export function getLogger(): Logger {
  return logger ?? createLogger(process.env.GATEWIRE_LOG_LEVEL ?? 'info');
}
