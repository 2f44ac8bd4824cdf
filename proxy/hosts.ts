// Host: the state of one upstream server — in-flight count, passive health
// (NGINX's max_fails/fail_timeout), active health (set by HealthChecker) and
// draining (removed from DNS: finish in-flight, take no new).
import { formatAddress, parseAddress, type SocketTarget } from '../protocol/addresses.ts';

export type HostTarget = SocketTarget;
export { parseAddress };

export interface HostConfig {
  address: string;
  weight?: number;
  backup?: boolean;
  max_fails?: number;
  fail_timeout_ms?: number;
  /** Requests in flight at most (NGINX max_conns=); 0 = no limit. */
  max_conns?: number;
  /** The DNS name ("appserver:9000") this host's address was resolved from. */
  resolvedFrom?: string;
}

export class Host {
  readonly address: string;
  readonly target: HostTarget;
  readonly weight: number;
  readonly backup: boolean;
  readonly maxFails: number;
  readonly failTimeoutMs: number;
  readonly maxConns: number;
  readonly resolvedFrom?: string;
  /** Requests in flight (acquire/release). */
  inflight = 0;
  /** Removed by DNS: finish in-flight, take no new. */
  draining = false;
  /** Active health state: true until health checks say otherwise. */
  healthy = true;
  /** Failures counted in the current fail_timeout window. */
  fails = 0;
  /** Start of the current failure-counting window (ms since epoch). */
  private windowStart = 0;
  /** Passively down until this time (ms since epoch); 0 = not down. */
  downUntil = 0;
  /** Total requests handed to this host, for /status. */
  requests = 0;
  /** Called by release() when a draining host's last request finishes (set by the pool). */
  onIdle: ((host: Host) => void) | null = null;

  constructor(cfg: HostConfig) {
    this.target = parseAddress(cfg.address);
    this.address = formatAddress(this.target);
    this.weight = cfg.weight ?? 1;
    this.backup = cfg.backup ?? false;
    this.maxFails = cfg.max_fails ?? 1;
    this.failTimeoutMs = cfg.fail_timeout_ms ?? 10_000;
    this.maxConns = cfg.max_conns ?? 0;
    this.resolvedFrom = cfg.resolvedFrom;
  }

  acquire(): void {
    this.inflight++;
    this.requests++;
  }

  release(): void {
    if (this.inflight === 0) return;
    this.inflight--;
    if (this.inflight === 0 && this.draining) this.onIdle?.(this);
  }

  /**
   * NGINX's passive health: max_fails failures within fail_timeout mark the server
   * down for fail_timeout. After that it gets traffic again, but (as in NGINX, whose
   * fails counter is only reset by a success) a single failure of that first try
   * marks it down again. max_fails 0 disables the accounting.
   */
  markFailure(now = Date.now()): void {
    if (this.maxFails === 0) return;
    if (this.fails >= this.maxFails) {
      this.fails++;
      this.downUntil = now + this.failTimeoutMs;
      return;
    }
    if (now - this.windowStart > this.failTimeoutMs) {
      this.windowStart = now;
      this.fails = 0;
    }
    this.fails++;
    if (this.fails >= this.maxFails) this.downUntil = now + this.failTimeoutMs;
  }

  /** Down at once for fail_timeout, whatever max_fails says (a refused connection). */
  markDown(now = Date.now()): void {
    this.fails = Math.max(this.fails, this.maxFails, 1);
    this.downUntil = now + this.failTimeoutMs;
  }

  markSuccess(): void {
    this.fails = 0;
    this.downUntil = 0;
  }

  /** Passively down (max_fails reached and fail_timeout not yet over). */
  down(now = Date.now()): boolean {
    return this.downUntil > now;
  }

  available(now = Date.now()): boolean {
    return !this.draining && this.healthy && !(this.downUntil > now) && !this.atCapacity();
  }

  /** At its max_conns: skipped by every policy until a request ends (the upstream queue waits for that). */
  atCapacity(): boolean {
    return this.maxConns > 0 && this.inflight >= this.maxConns;
  }

  snapshot(now = Date.now()): {
    address: string;
    weight: number;
    backup: boolean;
    resolved_from?: string;
    inflight: number;
    requests: number;
    healthy: boolean;
    down: boolean;
    down_for_ms: number;
    fails: number;
    draining: boolean;
    available: boolean;
  } {
    return {
      address: this.address,
      weight: this.weight,
      backup: this.backup,
      ...(this.resolvedFrom ? { resolved_from: this.resolvedFrom } : {}),
      inflight: this.inflight,
      requests: this.requests,
      healthy: this.healthy,
      down: this.down(now),
      down_for_ms: Math.max(0, this.downUntil - now),
      fails: this.fails,
      draining: this.draining,
      available: this.available(now),
    };
  }
}
