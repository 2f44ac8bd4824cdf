// The pre-fork supervisor behind `gatewire serve` and `gatewire proxy
// --workers N`: binds the listening sockets once, forks N workers that all
// accept on them, and keeps N of them alive (respawn with backoff, harakiri on
// a blocked event loop, --max-requests recycling, rolling reload, graceful
// stop).
//
// Why child processes sharing the bound sockets (the NGINX/uWSGI/gunicorn
// pre-fork model) and not node:cluster's round-robin: with round-robin the
// primary accepts every connection and passes it to a worker over IPC; uwsgi
// classic carries one request per connection, so NGINX → appserver would cost
// an accept + sendmsg in one single-threaded primary per request, a
// bottleneck and a CPU tax, and the same holds for short-lived client
// connections to the proxy. Here workers accept() directly. The master holds
// the sockets for its whole life, so a connection that arrives while a worker
// restarts or reloads waits in the kernel backlog instead of being refused.
// The cost is the kernel's less even spreading of connections across workers.
//
// Every worker waits on the one socket and whichever wakes first accepts; libuv
// then accepts in a loop until the backlog is empty, so the worker that wakes
// first takes a burst of connections whole (64 keep-alive connections opened
// at once: the busiest of 2 workers served 93 % of the requests). Workers run
// with UV_TCP_SINGLE_ACCEPT=1 (unless the environment says otherwise): libuv
// yields after each accept, and the others get their share (67 %).
//
// Why not `reusePort` (Node 22.12+: each worker binds its own SO_REUSEPORT
// socket and the kernel hashes connections across them): measured with
// bench/listen-models.ts (2 workers, node:http hello, wrk, 3 interleaved
// rounds, medians, on a shared 2-core machine), it spread keep-alive
// connections most evenly (busiest worker 56 %) but served no more than the
// shared socket with single accept (23,900 vs 25,150 req/s; plain shared
// socket 15,800), and it loses what the shared socket guarantees: a worker's
// own socket takes its accept queue down with it, so connections already
// hashed to a worker that is killed are reset (16 failed requests per kill
// with a new connection per request, against 1 — the one in flight — with
// the shared socket).
//
// The master stays small (a bare Node is ~41 MiB, the master ~49): it loads
// node:child_process and this directory, never the app, the proxy's routing,
// Fastify or pino.
import type { ChildProcess } from 'node:child_process';
import { childNodeFlags } from '../cli/node-flags.ts';
import { type BoundHandle, bindHandle, describeBound, type ListenAddress } from './listen.ts';
import type { MasterLog } from './log.ts';
import type { FromWorker, ToWorker, WorkerLoad } from './messages.ts';

// builtins without their ES module facades: see listen.ts
const { fork } = process.getBuiltinModule('node:child_process');
const { setFlagsFromString } = process.getBuiltinModule('node:v8');
const { chmodSync, existsSync } = process.getBuiltinModule('node:fs');
const { fileURLToPath } = process.getBuiltinModule('node:url');

export type WorkerState = 'starting' | 'ready' | 'stopping';

export interface SupervisorOptions {
  /** The command as users know it, for messages: "gatewire serve". */
  name: string;
  /** Arguments after bin/gatewire.js for every worker: ['serve', ...argv]. */
  workerArgs: string[];
  workers: number;
  /** Bound here once, inherited by every worker. */
  listen: ListenAddress[];
  /** Octal mode for Unix socket files, or null for the umask's. */
  chmodSocket?: number | null;
  /** A worker whose heartbeats stop this long (blocked event loop) is killed and replaced: harakiri. */
  heartbeatTimeoutMs: number;
  /** A stopping worker gets this long to finish its in-flight work (then 5 s more before SIGKILL). */
  gracefulTimeoutMs: number;
  /** SIGTERM: serve as usual this long before the graceful stop (an orchestrator removes the endpoint meanwhile). */
  drainDelayMs?: number;
  log: MasterLog;
  /** Extra environment for the workers. */
  env?: NodeJS.ProcessEnv;
  /** Node flags of every worker; default: this process's own plus gatewire's (cli/node-flags.ts). */
  execArgv?: string[];
  /**
   * SIGHUP. Without it: a rolling replacement of every worker. With it (the proxy: validate the
   * config once here, then every worker swaps it in without a restart), this runs instead.
   */
  onReload?: () => Promise<void>;
}

export interface WorkerSnapshot {
  id: number;
  slot: number;
  pid: number;
  state: WorkerState;
  startedAt: string;
  /** Restarts (crashes, harakiri kills, recycles, reloads) in this worker's slot. */
  restarts: number;
  requests: number;
  inflight: number;
  connections: number;
  rss: number;
}

interface Worker {
  id: number;
  slot: number;
  child: ChildProcess;
  state: WorkerState;
  /** Said 'loaded': it listens for notes (it got the sticky ones then). */
  loaded: boolean;
  startedAt: number;
  lastBeat: number;
  load: WorkerLoad;
  /** Settles once the worker accepts (true) or died/failed before (false). */
  ready: Promise<boolean>;
  resolveReady: (ok: boolean) => void;
  fatal: string | null;
  killedFor: string | null;
  calls: Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>;
}

const STARTUP_TIMEOUT_MS = 60_000;
const MAX_BACKOFF_MS = 10_000;
/** A worker that dies sooner than this after its start is in a crash streak (backoff grows). */
const CRASH_STREAK_MS = 5000;

/** Workers run through the same bin as the master, so they make the same runtime choice (sources or dist/). */
function gatewireBin(): string {
  for (const rel of ['../bin/gatewire.js', '../../bin/gatewire.js']) {
    const p = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(p)) return p;
  }
  return process.argv[1];
}

/**
 * A master handles a few messages a second: V8's interpreter and baseline
 * compiler are plenty, and its optimizing compilers (TurboFan, and Maglev
 * where the command line left it on) cost memory for nothing.
 * The first time a function of the master got hot (heartbeats, after about
 * six minutes of a soak) TurboFan ran, and the pages of the node binary that
 * hold TurboFan's own code joined the master's RSS for good: 48.5 -> 54.8
 * MiB in the soak; with 2 workers beating every 50 ms, 50.2 -> 59.3 MB within
 * two minutes, against a flat 50.7 with this (loading node:v8 for it costs
 * 0.35 MB). Turned off here, in the master only: workers are forked with the
 * command line's flags, which this does not change.
 * test/supervisor-master-runs-without-the-optimizing-compiler.test.ts checks
 * that this Node still honours the flag set at run time.
 */
export function masterCompilers(): void {
  setFlagsFromString('--no-turbofan');
  setFlagsFromString('--no-maglev');
}

export class Supervisor {
  readonly opts: SupervisorOptions;
  private readonly log: MasterLog;
  private handles: BoundHandle[] = [];
  private readonly workers = new Map<number, Worker>();
  private readonly restarts: number[];
  private readonly crashStreak: number[];
  /** Notes every worker must know, sent again to each new worker before its handles (key → message). */
  private readonly sticky = new Map<string, ToWorker>();
  private nextId = 1;
  private nextCall = 1;
  private stopping = false;
  private reloading: Promise<void> | null = null;
  private reloadAgain = false;
  private watchdog: NodeJS.Timeout | null = null;
  /** What the last worker to load said about itself (the appserver: its app's interface). */
  info = '';
  /** "unix:/path" or "host:port" of every bound socket, the real port when 0 was asked. */
  bound: string[] = [];

  constructor(opts: SupervisorOptions) {
    this.opts = opts;
    this.log = opts.log;
    this.restarts = new Array(opts.workers).fill(0);
    this.crashStreak = new Array(opts.workers).fill(0);
  }

  /** Binds, starts every worker and waits until all accept. An error message if that failed (nothing is left running). */
  async start(): Promise<string | null> {
    masterCompilers();
    try {
      for (const addr of this.opts.listen) {
        const h = await bindHandle(addr);
        this.handles.push(h);
        if (addr.kind === 'unix' && this.opts.chmodSocket != null) chmodSync(addr.path, this.opts.chmodSocket);
      }
    } catch (err) {
      this.closeHandles();
      return (err as Error).message;
    }
    this.bound = this.handles.map((h) => describeBound(h.addr, h.port));
    const first: Worker[] = [];
    for (let slot = 0; slot < this.opts.workers; slot++) first.push(this.spawn(slot));
    const ok = await Promise.all(first.map((w) => w.ready));
    if (ok.includes(false)) {
      this.stopping = true;
      for (const w of this.workers.values()) w.child.kill('SIGKILL');
      this.closeHandles();
      return first.find((w) => w.fatal)?.fatal ?? 'a worker exited during start-up';
    }
    const hb = this.opts.heartbeatTimeoutMs;
    this.watchdog = setInterval(() => this.checkWorkers(), Math.max(50, Math.min(500, hb / 4)));
    return null;
  }

  /** SIGHUP reloads, SIGTERM/SIGINT stop gracefully then run `onStopped` (default: exit 0); a second one kills. */
  handleSignals(onStopped: () => void | Promise<void> = () => process.exit(0)): void {
    process.on('SIGHUP', () => this.reload());
    const stop = (signal: NodeJS.Signals) => {
      if (this.stopping) {
        this.log.warn('second signal: killing the workers now');
        for (const w of this.workers.values()) w.child.kill('SIGKILL');
        this.closeHandles();
        process.exit(1);
      }
      this.stop(signal, signal === 'SIGTERM' ? (this.opts.drainDelayMs ?? 0) : 0).then(onStopped);
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  }

  private spawn(slot: number): Worker {
    const id = this.nextId++;
    const child = fork(gatewireBin(), this.opts.workerArgs, {
      env: {
        UV_TCP_SINGLE_ACCEPT: '1',
        ...process.env,
        ...this.opts.env,
        GATEWIRE_ROLE: 'worker',
        GATEWIRE_WORKER_ID: String(id),
      },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      execArgv: this.opts.execArgv ?? childNodeFlags(),
      serialization: 'json',
    });
    let resolveReady!: (ok: boolean) => void;
    const ready = new Promise<boolean>((r) => {
      resolveReady = r;
    });
    const now = Date.now();
    const w: Worker = {
      id,
      slot,
      child,
      state: 'starting',
      loaded: false,
      startedAt: now,
      lastBeat: now,
      load: { requests: 0, inflight: 0, connections: 0, rss: 0 },
      ready,
      resolveReady,
      fatal: null,
      killedFor: null,
      calls: new Map(),
    };
    this.workers.set(id, w);
    child.on('message', (msg: FromWorker) => this.onMessage(w, msg));
    child.on('error', (err) => this.log.error({ err, worker: id }, 'worker process error'));
    child.once('exit', (code, signal) => this.onExit(w, code, signal));
    this.log.debug({ worker: id, pid: child.pid, slot }, 'worker spawned');
    return w;
  }

  private onMessage(w: Worker, msg: FromWorker): void {
    switch (msg.t) {
      case 'loaded': {
        w.loaded = true;
        if (msg.info) this.info = msg.info;
        // what every worker must know before it accepts (the proxy: its config, upstream health)
        for (const note of this.sticky.values()) this.send(w, note);
        const total = this.handles.length;
        this.handles.forEach((h, index) => {
          const m: ToWorker = { t: 'listen', index, total };
          w.child.send(m, h.handle as never);
        });
        break;
      }
      case 'ready':
        if (w.state === 'starting') w.state = 'ready';
        w.lastBeat = Date.now();
        w.resolveReady(true);
        break;
      case 'hb':
        w.lastBeat = Date.now();
        w.load = { requests: msg.requests, inflight: msg.inflight, connections: msg.connections, rss: msg.rss };
        break;
      case 'fatal':
        w.fatal = msg.message;
        break;
      case 'recycle':
        if (w.state === 'ready' && !this.stopping) this.replace(w, 'max-requests').catch(() => {});
        break;
      case 'reply': {
        const call = w.calls.get(msg.id);
        if (!call) break;
        w.calls.delete(msg.id);
        clearTimeout(call.timer);
        if (msg.error !== undefined) call.reject(new Error(msg.error));
        else call.resolve(msg.data);
        break;
      }
    }
  }

  private onExit(w: Worker, code: number | null, signal: NodeJS.Signals | null): void {
    this.workers.delete(w.id);
    w.resolveReady(false);
    for (const call of w.calls.values()) {
      clearTimeout(call.timer);
      call.reject(new Error(`worker ${w.id} exited`));
    }
    w.calls.clear();
    const planned = w.state === 'stopping' || this.stopping;
    if (planned) {
      this.log.debug({ worker: w.id, pid: w.child.pid, code, signal }, 'worker exited');
      return;
    }
    const lived = Date.now() - w.startedAt;
    this.restarts[w.slot]++;
    const why = w.killedFor ?? (signal ? `killed by ${signal}` : `exit code ${code}`);
    // A worker that dies quickly again and again (a broken app) is respawned ever more slowly.
    const streak = lived < CRASH_STREAK_MS ? ++this.crashStreak[w.slot] : (this.crashStreak[w.slot] = 0);
    const delay = streak === 0 ? 0 : Math.min(MAX_BACKOFF_MS, 100 * 2 ** (streak - 1));
    this.log.error({ worker: w.id, pid: w.child.pid, slot: w.slot, why, livedMs: lived, respawnInMs: delay }, 'worker died: respawning');
    const again = () => {
      if (!this.stopping && !this.slotTaken(w.slot)) this.spawn(w.slot);
    };
    if (delay === 0) again();
    else setTimeout(again, delay).unref();
  }

  private slotTaken(slot: number): boolean {
    for (const w of this.workers.values()) if (w.slot === slot && w.state !== 'stopping') return true;
    return false;
  }

  /** Harakiri: a worker whose heartbeats stopped (event loop blocked) beyond the limit is killed; onExit replaces it. */
  private checkWorkers(): void {
    const now = Date.now();
    const limit = this.opts.heartbeatTimeoutMs;
    for (const w of this.workers.values()) {
      if (w.killedFor) continue;
      if (w.state === 'starting') {
        if (now - w.startedAt > Math.max(STARTUP_TIMEOUT_MS, limit)) this.kill(w, 'did not start in time');
      } else if (w.state === 'ready' && now - w.lastBeat > limit) {
        this.kill(w, `event loop blocked for more than ${limit / 1000} s (harakiri)`);
      }
    }
  }

  private kill(w: Worker, why: string): void {
    w.killedFor = why;
    this.log.error({ worker: w.id, pid: w.child.pid, why }, 'killing worker');
    w.child.kill('SIGKILL');
  }

  /** Starts a replacement for `old` in its slot, waits until it accepts, then stops `old` gracefully. */
  private async replace(old: Worker, why: string): Promise<boolean> {
    const fresh = this.spawn(old.slot);
    const ok = await fresh.ready;
    if (!ok) {
      this.log.error({ worker: old.id, why, failure: fresh.fatal }, 'replacement worker failed to start: keeping the old one');
      return false;
    }
    this.restarts[old.slot]++;
    this.stopWorker(old);
    return true;
  }

  private stopWorker(w: Worker): void {
    if (w.state === 'stopping') return;
    w.state = 'stopping';
    if (w.child.connected) this.send(w, { t: 'stop' });
    else w.child.kill('SIGTERM');
    const t = setTimeout(() => {
      if (w.child.exitCode === null && w.child.signalCode === null) {
        this.log.error({ worker: w.id }, 'worker did not stop within the graceful timeout: killing it');
        w.child.kill('SIGKILL');
      }
    }, this.opts.gracefulTimeoutMs + 5000);
    t.unref();
  }

  /** SIGHUP: the onReload hook, or every worker replaced one at a time, never fewer than N accepting. */
  reload(): void {
    if (this.stopping) return;
    if (this.reloading) {
      this.reloadAgain = true;
      return;
    }
    const hook = this.opts.onReload;
    this.log.info({ workers: this.workers.size }, hook ? 'SIGHUP: reloading' : 'SIGHUP: rolling reload');
    this.reloading = (async () => {
      do {
        this.reloadAgain = false;
        if (hook) {
          await hook().catch((err) => this.log.error({ err }, 'reload failed'));
          continue;
        }
        for (const w of [...this.workers.values()].filter((x) => x.state === 'ready')) {
          if (this.stopping) break;
          if (!this.workers.has(w.id) || w.state !== 'ready') continue;
          if (!(await this.replace(w, 'reload'))) break;
        }
      } while (this.reloadAgain && !this.stopping);
      if (!hook) this.log.info('rolling reload done');
      this.reloading = null;
    })();
  }

  /**
   * After `drainMs` of serving as usual, every worker stops accepting and finishes its in-flight
   * work; resolves once all exited. The listening sockets close as the stop begins, not when the
   * last worker exits: a connection that arrives meanwhile is refused at once (a proxy retries that
   * elsewhere, whatever the method) instead of waiting in a backlog nobody accepts from.
   */
  async stop(signal: string, drainMs = 0): Promise<void> {
    this.stopping = true;
    if (drainMs > 0) {
      this.log.info({ signal, drainDelayMs: drainMs }, 'draining: serving as usual until the graceful stop');
      await new Promise((r) => setTimeout(r, drainMs));
    }
    this.log.info({ signal, workers: this.workers.size }, 'stopping gracefully');
    if (this.watchdog) clearInterval(this.watchdog);
    const exits = [...this.workers.values()].map((w) => new Promise<void>((r) => (w.child.exitCode !== null || w.child.signalCode !== null ? r() : w.child.once('exit', () => r()))));
    for (const w of this.workers.values()) this.stopWorker(w);
    this.closeHandles();
    await Promise.all(exits);
    this.log.info('stopped');
  }

  private closeHandles(): void {
    for (const h of this.handles) h.close();
    this.handles = [];
  }

  private send(w: Worker, msg: ToWorker): void {
    if (w.child.connected) w.child.send(msg);
  }

  /**
   * Tells every worker (`key` given: and every worker started later, before it accepts), e.g. an
   * upstream server's health as found by the master's one health checker.
   */
  broadcast(what: string, data: unknown, key?: string): void {
    const note: ToWorker = { t: 'note', what, data };
    if (key !== undefined) this.sticky.set(key, note);
    // a worker not loaded yet gets the sticky notes when it is
    for (const w of this.workers.values()) if (w.loaded && w.state !== 'stopping') this.send(w, note);
  }

  /** Asks every accepting worker; a worker that does not answer within `timeoutMs` is left out. */
  async callAll(what: string, timeoutMs = 2000): Promise<Array<{ worker: WorkerSnapshot; data: unknown }>> {
    const ready = [...this.workers.values()].filter((w) => w.state === 'ready');
    const answers = await Promise.all(
      ready.map((w) =>
        this.call(w, what, timeoutMs).then(
          (data) => ({ worker: this.snapshotOf(w), data }),
          () => null,
        ),
      ),
    );
    return answers.filter((a) => a !== null);
  }

  private call(w: Worker, what: string, timeoutMs: number): Promise<unknown> {
    return new Promise((resolve, reject) => {
      if (!w.child.connected) return reject(new Error(`worker ${w.id} is not connected`));
      const id = this.nextCall++;
      const timer = setTimeout(() => {
        w.calls.delete(id);
        reject(new Error(`worker ${w.id} did not answer '${what}' within ${timeoutMs} ms`));
      }, timeoutMs);
      w.calls.set(id, { resolve, reject, timer });
      this.send(w, { t: 'call', id, what });
    });
  }

  private snapshotOf(w: Worker): WorkerSnapshot {
    return {
      id: w.id,
      slot: w.slot,
      pid: w.child.pid ?? 0,
      state: w.state,
      startedAt: new Date(w.startedAt).toISOString(),
      restarts: this.restarts[w.slot],
      ...w.load,
    };
  }

  /** Every live worker, oldest slot first. */
  snapshot(): WorkerSnapshot[] {
    return [...this.workers.values()].sort((a, b) => a.slot - b.slot || a.id - b.id).map((w) => this.snapshotOf(w));
  }
}
