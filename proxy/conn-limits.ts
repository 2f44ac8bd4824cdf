// Concurrency limits: requests in flight per key (NGINX `limit_conn`) and per upstream server
// (`server ... max_conns=`), each with an optional bounded wait queue (NGINX Plus `queue`): a
// request over the limit waits for a slot up to a timeout, then gets 503. A request whose client
// goes away while waiting leaves the queue at once. Counted in this process only: a slot is held
// by a live request of this process, which a shared store could not release when the process dies.
import type { EdgeMetrics } from './edge-metrics.ts';

interface Waiter {
  ready: () => void;
  timedOut: () => void;
  timer: NodeJS.Timeout | null;
  since: number;
}

/** FIFO of requests waiting for a slot; bounded in length and in time. */
export class WaitQueue {
  readonly label: string;
  private readonly size: number;
  private readonly timeoutMs: number;
  private readonly metrics: EdgeMetrics | null;
  private readonly waiters: Waiter[] = [];

  constructor(label: string, size: number, timeoutMs: number, metrics: EdgeMetrics | null) {
    this.label = label;
    this.size = size;
    this.timeoutMs = timeoutMs;
    this.metrics = metrics;
  }

  get length(): number {
    return this.waiters.length;
  }

  /** Queues a request; null when the queue is full (the caller answers 503). The result cancels the wait. */
  wait(ready: () => void, timedOut: () => void): (() => void) | null {
    if (this.waiters.length >= this.size) {
      this.metrics?.connRejected.inc({ limit: this.label });
      return null;
    }
    const w: Waiter = { ready, timedOut, timer: null, since: performance.now() };
    w.timer = setTimeout(() => {
      if (!this.remove(w)) return;
      this.metrics?.queueWait.observe({ limit: this.label, outcome: 'timeout' }, (performance.now() - w.since) / 1000);
      this.metrics?.connRejected.inc({ limit: this.label });
      w.timedOut();
    }, this.timeoutMs);
    this.waiters.push(w);
    this.metrics?.queueDepth.set({ limit: this.label }, this.waiters.length);
    return () => {
      if (this.remove(w) && w.timer) clearTimeout(w.timer);
    };
  }

  /** A slot was freed: the longest waiter gets it. */
  wake(): boolean {
    const w = this.waiters.shift();
    if (w === undefined) return false;
    if (w.timer) clearTimeout(w.timer);
    this.metrics?.queueDepth.set({ limit: this.label }, this.waiters.length);
    this.metrics?.queueWait.observe({ limit: this.label, outcome: 'admitted' }, (performance.now() - w.since) / 1000);
    w.ready();
    return true;
  }

  private remove(w: Waiter): boolean {
    const i = this.waiters.indexOf(w);
    if (i < 0) return false;
    this.waiters.splice(i, 1);
    this.metrics?.queueDepth.set({ limit: this.label }, this.waiters.length);
    return true;
  }

  /** Reload or stop: every waiter times out now. */
  flush(): void {
    for (const w of this.waiters.splice(0)) {
      if (w.timer) clearTimeout(w.timer);
      w.timedOut();
    }
    this.metrics?.queueDepth.set({ limit: this.label }, 0);
  }
}

interface KeyState {
  active: number;
  queue: WaitQueue | null;
  /** No request in flight or waiting: kept until the next sweep. */
  idle: boolean;
}

/** Idle keys a zone keeps before it sweeps them all out. */
const IDLE_KEYS_KEPT = 1024;

/** One `limits.conn` zone: at most `max` requests in flight per key. */
export class ConcurrencyLimit {
  readonly name: string;
  readonly max: number;
  readonly dryRun: boolean;
  private readonly queueSize: number;
  private readonly timeoutMs: number;
  private readonly metrics: EdgeMetrics | null;
  /**
   * Busy keys, and idle ones until IDLE_KEYS_KEPT of them pile up: deleting a key the moment its
   * last request ends would add and delete one Map entry per request for a client with one
   * request at a time, and a long-lived Map churned like that keeps every request alive through
   * the young generation's collections (see protocol/stream-table.ts).
   */
  private readonly keys = new Map<string, KeyState>();
  private idleKeys = 0;

  constructor(cfg: { name: string; max: number; queue: number; queue_timeout_ms: number; dry_run: boolean }, metrics: EdgeMetrics | null) {
    this.name = cfg.name;
    this.max = cfg.max;
    this.queueSize = cfg.queue;
    this.timeoutMs = cfg.queue_timeout_ms;
    this.dryRun = cfg.dry_run;
    this.metrics = metrics;
  }

  /**
   * Takes a slot for `key`: true at once, false when over the limit with no room to wait, or a
   * promise settled when a slot frees (true) or the wait times out (false). `onCancel` receives the
   * function that withdraws a queued request (its client went away).
   */
  acquire(key: string, onCancel?: (cancel: () => void) => void): boolean | Promise<boolean> {
    let s = this.keys.get(key);
    if (s === undefined) this.keys.set(key, (s = { active: 0, queue: null, idle: false }));
    else if (s.idle) {
      s.idle = false;
      this.idleKeys--;
    }
    if (s.active < this.max || this.dryRun) {
      if (s.active >= this.max) this.metrics?.connRejected.inc({ limit: `dry_run:${this.name}` });
      s.active++;
      return true;
    }
    if (this.queueSize === 0) {
      this.metrics?.connRejected.inc({ limit: this.name });
      this.drop(s);
      return false;
    }
    s.queue ??= new WaitQueue(this.name, this.queueSize, this.timeoutMs, this.metrics);
    const state = s;
    return new Promise<boolean>((resolve) => {
      const cancel = state.queue?.wait(
        () => {
          state.active++;
          resolve(true);
        },
        () => {
          this.drop(state);
          resolve(false);
        },
      );
      if (cancel == null) {
        resolve(false);
        return;
      }
      onCancel?.(() => {
        cancel();
        this.drop(state);
      });
    });
  }

  release(key: string): void {
    const s = this.keys.get(key);
    if (s === undefined) return;
    s.active--;
    // the freed slot goes straight to the longest waiter
    if (s.queue?.wake()) return;
    this.drop(s);
  }

  private drop(s: KeyState): void {
    if (s.idle || s.active > 0 || (s.queue !== null && s.queue.length > 0)) return;
    s.idle = true;
    if (++this.idleKeys <= IDLE_KEYS_KEPT) return;
    for (const [k, state] of this.keys) if (state.idle) this.keys.delete(k);
    this.idleKeys = 0;
  }

  /** Keys with requests in flight or waiting (tests, /status). */
  get size(): number {
    return this.keys.size - this.idleKeys;
  }
}
