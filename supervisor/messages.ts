// The supervisor ⇄ worker contract over the IPC channel (JSON serialization).
// Small on purpose: listening handles in, readiness and heartbeats out, and
// two open ends: `call`/`reply` (the master asks one worker for something,
// e.g. its metrics) and `note` (the master tells every worker something,
// e.g. an upstream's health).

/** What a worker counts, sent with every heartbeat. */
export interface WorkerLoad {
  requests: number;
  inflight: number;
  connections: number;
  rss: number;
}

export type ToWorker =
  /** The `index`-th of `total` bound handles travels with this message. */
  | { t: 'listen'; index: number; total: number }
  /** Stop accepting, finish in-flight work, exit 0. */
  | { t: 'stop' }
  | { t: 'call'; id: number; what: string }
  | { t: 'note'; what: string; data: unknown };

export type FromWorker =
  /** Loaded and ready for its handles; `info` is shown by the master (e.g. the app's interface). */
  | { t: 'loaded'; info?: string }
  /** Accepting on every handle. */
  | { t: 'ready' }
  /** Cannot start: the master reports `message` and does not respawn blindly. */
  | { t: 'fatal'; message: string }
  | ({ t: 'hb' } & WorkerLoad)
  /** Asks for a replacement (--max-requests): started first, then this one is stopped. */
  | { t: 'recycle' }
  | { t: 'reply'; id: number; data: unknown; error?: string };
