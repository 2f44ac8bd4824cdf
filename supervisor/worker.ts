// The worker's end of the supervisor contract: receives the master's bound
// handles, heartbeats its load, answers the master's calls and notes, and
// stops when told, when SIGTERMed, or when the master goes away.
import type { FromWorker, ToWorker, WorkerLoad } from './messages.ts';

export interface WorkerHooks {
  /** Start accepting on an inherited bound handle (`server.listen(handle)`); resolves once listening. */
  listen(handle: object, index: number): Promise<void>;
  /** Stop accepting, finish in-flight work; the process exits 0 once this resolves. */
  stop(why: string): Promise<void>;
  /** Counters for the heartbeat (RSS is added here). */
  load(): Omit<WorkerLoad, 'rss'> | Promise<Omit<WorkerLoad, 'rss'>>;
  /** The master asks for something (the proxy's admin: this worker's metrics). */
  call?(what: string): unknown;
  /** The master tells every worker something (the proxy: a new config, an upstream's health). */
  note?(what: string, data: unknown): void;
}

export interface WorkerLink {
  /** Ask the master for a replacement (--max-requests). */
  recycle(): void;
}

/** True in a process forked by a Supervisor. */
export function isSupervisedWorker(): boolean {
  return process.env.GATEWIRE_ROLE === 'worker' && typeof process.send === 'function';
}

export function workerId(): number {
  return Number(process.env.GATEWIRE_WORKER_ID ?? 0);
}

function send(msg: FromWorker): void {
  if (process.connected) process.send!(msg);
}

/** Cannot start: the master reports `message` (and respawns with backoff if it was running already). */
export function reportFatal(message: string): void {
  send({ t: 'fatal', message });
  process.disconnect?.();
}

/**
 * Joins the master: tells it this worker is loaded (`info` is shown by the master), then accepts on
 * the handles it sends. `heartbeatMs` must be well below the master's harakiri limit.
 */
export function joinSupervisor(hooks: WorkerHooks, opts: { heartbeatMs: number; info?: string; drainDelayMs?: number }): WorkerLink {
  let stopping = false;
  const heartbeat = async () => send({ t: 'hb', ...(await hooks.load()), rss: process.memoryUsage.rss() });
  // The heartbeat is how the master sees a blocked event loop (harakiri).
  setInterval(heartbeat, opts.heartbeatMs);
  const stop = (why: string) => {
    if (stopping) return;
    stopping = true;
    hooks.stop(why).then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  let listening = 0;
  process.on('message', (msg: ToWorker, handle: unknown) => {
    switch (msg.t) {
      case 'listen':
        hooks.listen(handle as object, msg.index).then(
          () => {
            if (++listening === msg.total) heartbeat().then(() => send({ t: 'ready' }));
          },
          (err: Error) => reportFatal(`cannot accept on socket ${msg.index}: ${err.message}`),
        );
        break;
      case 'stop':
        stop('master asked');
        break;
      case 'call':
        Promise.resolve()
          .then(() => hooks.call?.(msg.what))
          .then(
            (data) => send({ t: 'reply', id: msg.id, data: data ?? null }),
            (err: Error) => send({ t: 'reply', id: msg.id, data: null, error: err.message }),
          );
        break;
      case 'note':
        hooks.note?.(msg.what, msg.data);
        break;
    }
  });
  // The master is gone (killed): finish what is in flight and leave.
  process.on('disconnect', () => stop('master went away'));
  // SIGTERM to the whole group (systemd's KillMode=control-group): drain along with the master
  process.on('SIGTERM', () => setTimeout(() => stop('SIGTERM'), opts.drainDelayMs ?? 0));
  // Ctrl-C and a terminal hangup reach the whole process group: the master coordinates.
  process.on('SIGINT', () => {});
  process.on('SIGHUP', () => {});
  send({ t: 'loaded', info: opts.info });
  return { recycle: () => send({ t: 'recycle' }) };
}
