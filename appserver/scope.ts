// What every request gets whatever the app interface: the abort signal (fires
// when the client goes away or the app is cut at --timeout), the 504 timer,
// the --max-body limit for bodies of unknown length, and the short error
// answers (no stack trace ever leaves the process; it goes to the log).
import { ErrorCode } from '../protocol/constants.ts';
import type { AppExchange, RequestHead } from './exchange.ts';
import type { Logger } from './log.ts';

export interface ScopeLimits {
  timeoutMs: number;
  maxBody: number;
  log: Logger;
  /** The 504 deadlines of this server's requests (created with the first request). */
  deadlines?: DeadlineQueue;
}

/**
 * The --timeout deadlines of in-flight requests, in one list and one timer.
 * Every request of a server has the same timeout, so the list is in deadline
 * order as it is in arrival order: arming and disarming are O(1) link
 * operations instead of a timer each (a timers-list insert and removal per
 * request). A 504 goes out at most one tick (timeout / 20, ≤ 100 ms) late.
 */
export class DeadlineQueue {
  private readonly timeoutMs: number;
  private readonly tickMs: number;
  private head: RequestScope | null = null;
  private tail: RequestScope | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(timeoutMs: number) {
    this.timeoutMs = timeoutMs;
    this.tickMs = Math.max(1, Math.min(100, Math.floor(timeoutMs / 20)));
  }

  add(scope: RequestScope): void {
    scope.deadline = performance.now() + this.timeoutMs;
    scope.prev = this.tail;
    if (this.tail !== null) this.tail.next = scope;
    else this.head = scope;
    this.tail = scope;
    if (this.timer === null) {
      this.timer = setInterval(expire, this.tickMs, this);
      this.timer.unref();
    }
  }

  remove(scope: RequestScope): void {
    if (scope.deadline < 0) return;
    scope.deadline = -1;
    if (scope.prev !== null) scope.prev.next = scope.next;
    else this.head = scope.next;
    if (scope.next !== null) scope.next.prev = scope.prev;
    else this.tail = scope.prev;
    scope.prev = null;
    scope.next = null;
  }

  /** @internal the timer's tick: 504 every request past its deadline; the timer stops once the list is empty. */
  _expire(): void {
    if (this.head === null) {
      clearInterval(this.timer!);
      this.timer = null;
      return;
    }
    const now = performance.now();
    while (this.head !== null && this.head.deadline <= now) {
      const scope = this.head;
      this.remove(scope);
      onTimeout(scope);
    }
  }
}

function expire(queue: DeadlineQueue): void {
  queue._expire();
}

const TEXT_HEADERS = (length: number) => ['content-type', 'text/plain; charset=utf-8', 'content-length', String(length)];

export class RequestScope {
  readonly ex: AppExchange;
  readonly head: RequestHead;
  readonly limits: ScopeLimits;
  private controller: AbortController | null = null;
  /** performance.now() at which the 504 goes out; -1 when no deadline is armed. */
  deadline = -1;
  /** @internal DeadlineQueue links */
  prev: RequestScope | null = null;
  /** @internal */
  next: RequestScope | null = null;
  /** Set once the app's answer no longer matters (timed out, or the client left). */
  cut = false;
  /** Called (with the scope as `this`) when the app must stop writing (504 sent, client gone); adapters detach their writers. */
  onCut: ((this: RequestScope) => void) | null = null;
  /** The adapter's per-request state, for an onCut that is a module-level function rather than a closure per request. */
  adapterState: unknown = null;

  constructor(ex: AppExchange, head: RequestHead, limits: ScopeLimits) {
    this.ex = ex;
    this.head = head;
    this.limits = limits;
    if (limits.timeoutMs > 0) (limits.deadlines ??= new DeadlineQueue(limits.timeoutMs)).add(this);
  }

  /**
   * The exchange closed. Called by the server's one 'close' listener on the
   * exchange (a listener and closure of the scope's own were a per-request
   * allocation, and uwsgi fronts open a connection per request).
   */
  exchangeClosed(): void {
    this.clearTimer();
    // A response that was not completely handed to the transport means the client went away.
    if (!this.ex.writableFinished) this.abort(new DOMException('the client went away', 'AbortError'));
  }

  /** Lazily created: most requests never look at their signal. */
  get signal(): AbortSignal {
    if (this.controller === null) this.controller = new AbortController();
    return this.controller.signal;
  }

  /** The head is out: the 504 timer no longer applies (a streamed body may last as long as it likes). */
  headSent(): void {
    this.clearTimer();
  }

  abort(reason: unknown): void {
    if (!this.cut) {
      this.cut = true;
      this.onCut?.();
    }
    if (this.controller && !this.controller.signal.aborted) this.controller.abort(reason);
  }

  clearTimer(): void {
    if (this.deadline >= 0) this.limits.deadlines!.remove(this);
  }

  /** A short plain-text answer, if the head has not gone out yet; otherwise the exchange is reset. */
  replyError(status: number, text: string): void {
    const ex = this.ex;
    this.clearTimer();
    if (ex.destroyed) return;
    if (ex.headersSent) {
      ex.reset(ErrorCode.INTERNAL_ERROR);
      return;
    }
    const body = Buffer.from(text);
    if (this.head.method === 'HEAD') ex.respond(status, TEXT_HEADERS(body.length), { endStream: true });
    else {
      ex.respond(status, TEXT_HEADERS(body.length));
      ex.end(body);
    }
    this.discardBody();
  }

  /** The app raised or rejected: 500 with a short body, the stack to the log. */
  appFailed(err: unknown): void {
    this.limits.log.error({ err, method: this.head.method, url: this.head.target }, 'app error');
    this.replyError(500, 'Internal Server Error\n');
    this.abort(err);
  }

  /** The response is complete but the request body was not (all) read: stop the upload. */
  discardBody(): void {
    const ex = this.ex;
    if (ex.readableEnded || ex.destroyed) return;
    if (ex.writableFinished) ex.discardBody();
    else ex.once('finish', onFinishedDiscard);
  }

  /** A body of unknown length went past --max-body (the adapters count it): 413 if the head is not out yet, then the exchange is stopped. */
  tooLarge(): void {
    this.limits.log.warn({ method: this.head.method, url: this.head.target, limit: this.limits.maxBody }, 'request body over --max-body');
    const headersSent = this.ex.headersSent;
    if (!headersSent) this.replyError(413, 'Payload Too Large\n');
    this.abort(new Error('request body too large'));
    if (headersSent) {
      // The app already answered and may be streaming the body back (an echo): its response can
      // never finish now that the body is cut, so waiting for 'finish' would hang the client.
      if (!this.ex.destroyed) this.ex.reset(ErrorCode.BODY_TOO_LARGE);
      return;
    }
    if (!this.ex.destroyed && !this.ex.readableEnded) {
      if (this.ex.writableFinished) this.ex.reset(ErrorCode.BODY_TOO_LARGE);
      else this.ex.once('finish', () => this.ex.reset(ErrorCode.BODY_TOO_LARGE));
    }
  }
}

function onFinishedDiscard(this: AppExchange): void {
  if (!this.readableEnded && !this.destroyed) this.discardBody();
}

function onTimeout(scope: RequestScope): void {
  scope.limits.log.warn({ method: scope.head.method, url: scope.head.target, timeoutMs: scope.limits.timeoutMs }, 'app did not answer within --timeout: 504');
  const ex = scope.ex;
  if (ex.destroyed || ex.headersSent) return;
  scope.abort(new DOMException('the app did not answer within --timeout', 'TimeoutError'));
  const body = Buffer.from('Gateway Timeout\n');
  ex.respond(504, TEXT_HEADERS(body.length));
  ex.end(body);
  // The app may still hold the request body: reset the stream once the 504 is out.
  if (!ex.readableEnded) ex.once('finish', () => ex.reset(ErrorCode.CANCEL));
}
