// What the three transports share: one coarse timer for every deadline, the
// per-host FIFO of exchanges waiting for a connection or a slot, and the life
// of one exchange (its phase, its idle clock, cancellation through the
// request's AbortSignal, and settling its promise exactly once).
import type { Readable } from 'node:stream';
import { ClientAbortedError, timeoutError, type UpstreamError } from '../errors.ts';
import type { Host } from '../hosts.ts';
import type { TransportRequest, TransportResponse } from './transport.ts';

/** Anything with a deadline check, swept by a TimeoutSweeper. */
export interface Timed {
  checkTimeout(now: number): void;
  /** The entry's place in its sweeper (-1 when in none); the sweeper's own bookkeeping. */
  sweepIndex: number;
}

/**
 * One coarse interval per transport instead of a timer per request: timeouts are seconds long,
 * so checking every `granularityMs` costs nothing per request and fires at most that late (NGINX
 * keeps one timer tree for the same reason).
 *
 * The entries are an array with each entry's index stored on it (removal swaps the last one into
 * the hole), not a Set: a long-lived Set that takes and drops one entry per request gets its table
 * rebuilt every few dozen requests, V8 links each old table to the next, and that chain keeps
 * every request it held alive through scavenges until a full GC (see protocol/stream-table.ts).
 */
export class TimeoutSweeper<T extends Timed = Timed> {
  private readonly entries: T[] = [];
  private timer: NodeJS.Timeout | null = null;
  private readonly granularityMs: number;
  constructor(granularityMs = 200) {
    this.granularityMs = granularityMs;
  }
  get size(): number {
    return this.entries.length;
  }
  add(e: T): void {
    if (e.sweepIndex >= 0) return;
    e.sweepIndex = this.entries.length;
    this.entries.push(e);
    if (this.timer === null) {
      this.timer = setInterval(() => this.sweep(), this.granularityMs);
      this.timer.unref();
    }
  }
  delete(e: T): void {
    const i = e.sweepIndex;
    const entries = this.entries;
    if (i < 0 || entries[i] !== e) return;
    e.sweepIndex = -1;
    const last = entries.pop() as T;
    if (last !== e) {
      entries[i] = last;
      last.sweepIndex = i;
    }
  }
  /** The entries now (a copy: acting on one may remove it). */
  snapshot(): T[] {
    return this.entries.slice();
  }
  private sweep(): void {
    const entries = this.entries;
    if (entries.length === 0) {
      if (this.timer) clearInterval(this.timer);
      this.timer = null;
      return;
    }
    const now = Date.now();
    // a check may delete its own entry (or others): walk a copy
    for (const e of this.snapshot()) e.checkTimeout(now);
  }
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const e of this.entries) e.sweepIndex = -1;
    this.entries.length = 0;
  }
}

/** Exchanges waiting for a host's capacity (a session stream, a connection slot), served in order. */
export class HostQueue<T> {
  private items: T[] = [];
  get length(): number {
    return this.items.length;
  }
  push(item: T): void {
    this.items.push(item);
  }
  shift(): T | undefined {
    return this.items.shift();
  }
  remove(item: T): void {
    const i = this.items.indexOf(item);
    if (i >= 0) this.items.splice(i, 1);
  }
  /** Empties the queue and returns what was in it. */
  takeAll(): T[] {
    const all = this.items;
    this.items = [];
    return all;
  }
}

export const PHASE_QUEUED = 0;
export const PHASE_CONNECTING = 1;
/** The request is on the wire (head, maybe body); no response head yet. */
export const PHASE_HEAD = 2;
/** The response head was handed over; its body streams. */
export const PHASE_BODY = 3;
export const PHASE_DONE = 4;

/**
 * One try of a request on one host. Subclasses move `phase` forward and call touch() on activity;
 * the base settles the promise once (respond/fail), ends the exchange once (end), cancels when the
 * request's signal aborts, and maps idleness to the configured timeouts.
 */
export abstract class TransportExchange implements Timed {
  phase = PHASE_QUEUED;
  sweepIndex = -1;
  readonly host: Host;
  readonly req: TransportRequest;
  protected lastActivity = Date.now();
  private lastProgress = -1;
  private settled = false;
  private readonly resolve: (res: TransportResponse) => void;
  private readonly reject: (err: Error) => void;

  constructor(host: Host, req: TransportRequest, resolve: (res: TransportResponse) => void, reject: (err: Error) => void) {
    this.host = host;
    this.req = req;
    this.resolve = resolve;
    this.reject = reject;
    req.signal.addEventListener('abort', this);
  }

  /** The request's signal aborted (the client went away, or the exchange gave up with a reason). */
  handleEvent(): void {
    const reason = this.req.signal.reason as UpstreamError | undefined;
    this.abort(reason !== undefined && typeof reason.code === 'string' && reason.code.startsWith('GW_') ? reason : (new ClientAbortedError() as UpstreamError));
  }

  touch(now = Date.now()): void {
    this.lastActivity = now;
  }

  /** Hands the response head over (once); false when the exchange already failed. */
  protected respond(res: TransportResponse): boolean {
    if (this.settled) return false;
    this.settled = true;
    this.resolve(res);
    return true;
  }

  /**
   * Ends the exchange with an error: before the head, the promise rejects (the exchange may retry);
   * after it, the response body is destroyed with the error (the client connection is cut).
   */
  abort(err: UpstreamError): void {
    if (this.phase === PHASE_DONE) return;
    const body = this.settled ? this.responseBody() : null;
    this.end(true);
    if (!this.settled) {
      this.settled = true;
      this.reject(err);
    } else body?.destroy(err);
  }

  /** Releases what the exchange holds (once): `broken` when the connection or stream must not be reused. */
  protected end(broken: boolean): void {
    if (this.phase === PHASE_DONE) return;
    this.phase = PHASE_DONE;
    this.req.signal.removeEventListener('abort', this);
    this.release(broken);
  }

  protected abstract release(broken: boolean): void;
  protected abstract responseBody(): Readable | null;
  /** Bytes received from the upstream so far (any count that grows with them). */
  protected abstract upstreamProgress(): number;
  /** Response bytes are buffered, waiting for the client to take them: the client is the slow side. */
  protected abstract waitingForClient(): boolean;
  /** Request body bytes are waiting because the upstream does not take them (the send timeout applies). */
  protected abstract sendBlocked(): boolean;

  /**
   * NGINX's proxy_read_timeout and proxy_send_timeout, as the time since the last progress on either
   * side: bytes from the upstream, bytes to or from the client (a slow upload or a slow download is
   * the client's pace, bounded by its own timeouts, never the upstream's failure).
   */
  checkTimeout(now: number): void {
    const phase = this.phase;
    if (phase === PHASE_DONE) return;
    const req = this.req;
    if (phase >= PHASE_HEAD) {
      const progress = this.upstreamProgress() + req.progress();
      if (progress !== this.lastProgress || (phase === PHASE_BODY && this.waitingForClient())) {
        this.lastProgress = progress;
        this.lastActivity = now;
        return;
      }
    }
    const idle = now - this.lastActivity;
    if (phase === PHASE_HEAD && this.sendBlocked()) {
      if (idle > req.sendTimeoutMs) this.abort(timeoutError('the upstream took no request body bytes within the send timeout'));
      return;
    }
    if (idle <= req.readTimeoutMs) return;
    if (phase === PHASE_QUEUED || phase === PHASE_CONNECTING) this.abort(timeoutError('waiting for a connection'));
    else if (phase === PHASE_HEAD) this.abort(timeoutError('no response head'));
    else this.abort(timeoutError('no body bytes'));
  }
}
