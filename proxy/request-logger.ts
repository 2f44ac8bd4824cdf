// Fastify's per-request logger (request.log, reply.log), made only when a line
// is logged through it. Fastify's default makes a pino child bound to the
// request id for every request; on a request that goes well nothing logs
// through it (the access line is written from the exchange), and making the
// child was ~1 % of the proxy's CPU per request on hello (perf), with ~400
// bytes of garbage. Lines logged through it are the ones pino's child writes.
import type { Bindings, ChildLoggerOptions, LevelWithSilentOrString, Logger } from 'pino';

type LogArgs = [obj: unknown, msg?: string, ...args: unknown[]];

export class RequestLogger {
  private readonly parent: Logger;
  private readonly bindings: Bindings;
  private readonly opts: ChildLoggerOptions;
  private made: Logger | null = null;

  constructor(parent: Logger, bindings: Bindings, opts: ChildLoggerOptions) {
    this.parent = parent;
    this.bindings = bindings;
    this.opts = opts;
  }

  /** The pino child, made on first use. */
  get logger(): Logger {
    if (this.made === null) this.made = this.parent.child(this.bindings, this.opts);
    return this.made;
  }

  get level(): LevelWithSilentOrString {
    return this.made === null ? (this.opts.level ?? this.parent.level) : this.made.level;
  }
  set level(level: LevelWithSilentOrString) {
    this.logger.level = level;
  }

  fatal(...args: LogArgs): void {
    if (this.enabled('fatal')) (this.logger.fatal as (...a: LogArgs) => void)(...args);
  }
  error(...args: LogArgs): void {
    if (this.enabled('error')) (this.logger.error as (...a: LogArgs) => void)(...args);
  }
  warn(...args: LogArgs): void {
    if (this.enabled('warn')) (this.logger.warn as (...a: LogArgs) => void)(...args);
  }
  info(...args: LogArgs): void {
    if (this.enabled('info')) (this.logger.info as (...a: LogArgs) => void)(...args);
  }
  debug(...args: LogArgs): void {
    if (this.enabled('debug')) (this.logger.debug as (...a: LogArgs) => void)(...args);
  }
  trace(...args: LogArgs): void {
    if (this.enabled('trace')) (this.logger.trace as (...a: LogArgs) => void)(...args);
  }
  silent(): void {}

  child(bindings: Bindings, opts?: ChildLoggerOptions): Logger {
    return this.logger.child(bindings, opts);
  }

  /** Whether a line at `level` is written: asked of the parent until the child exists (a disabled debug line makes none). */
  private enabled(level: string): boolean {
    if (this.made !== null) return this.made.isLevelEnabled(level);
    return this.opts.level === undefined ? this.parent.isLevelEnabled(level) : this.logger.isLevelEnabled(level);
  }
}

/** Fastify's childLoggerFactory: a RequestLogger instead of a pino child per request. */
export function requestLoggerFactory(this: unknown, logger: Logger, bindings: Bindings, opts: ChildLoggerOptions): RequestLogger {
  return new RequestLogger(logger, bindings, opts);
}
