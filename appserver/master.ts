// The master: binds the listening sockets once, forks N workers that all
// accept on them, and supervises them (respawn with backoff, --max-requests
// recycling, harakiri on a blocked event loop, SIGHUP rolling reload,
// SIGTERM/SIGINT graceful stop).
//
// Why child processes sharing the bound sockets (the uWSGI/gunicorn pre-fork
// model) and not node:cluster's round-robin: with round-robin the primary
// accepts every connection and passes it to a worker over IPC; uwsgi classic
// carries one request per connection, so NGINX → appserver would cost an
// accept + sendmsg in one single-threaded primary per request — a bottleneck
// and a CPU tax. Here workers accept() directly. The master holds the sockets
// for its whole life, so a connection that arrives while a worker restarts or
// reloads waits in the kernel backlog instead of being refused. The cost is
// the kernel's less even spreading of connections across workers.
import { childNodeFlags } from '../cli/node-flags.ts';
import { type ChildProcess, fork } from 'node:child_process';
import { existsSync } from 'node:fs';
import type http from 'node:http';
import { fileURLToPath } from 'node:url';
import { type BoundHandle, bindHandle, describeBound, parseListenAddress } from './listen.ts';
import { createLogger, type Logger } from './log.ts';
import type { ServeOptions } from './options.ts';
import { startStatsServer, totals, type WorkerStats } from './stats.ts';
import type { FromWorker, ToWorker } from './worker.ts';

type State = 'starting' | 'ready' | 'stopping';

interface Worker {
  id: number;
  slot: number;
  child: ChildProcess;
  state: State;
  startedAt: number;
  lastBeat: number;
  requests: number;
  inflight: number;
  connections: number;
  rss: number;
  /** Settles once the worker listens (true) or died/failed before (false). */
  ready: Promise<boolean>;
  resolveReady: (ok: boolean) => void;
  fatal: string | null;
  killedFor: string | null;
}

const STARTUP_TIMEOUT_MS = 60_000;
const MAX_BACKOFF_MS = 10_000;

function gatewireBin(): string {
  for (const rel of ['../bin/gatewire.js', '../../bin/gatewire.js']) {
    const p = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(p)) return p;
  }
  return process.argv[1];
}

export class Master {
  private readonly opts: ServeOptions;
  private readonly argv: string[];
  private readonly log: Logger;
  private handles: BoundHandle[] = [];
  private readonly workers = new Map<number, Worker>();
  /** Slot → restarts (crashes, harakiri kills, recycles, reloads) of the worker in that slot. */
  private readonly restarts: number[];
  private readonly crashStreak: number[];
  private nextId = 1;
  private stopping = false;
  private reloading: Promise<void> | null = null;
  private reloadAgain = false;
  private watchdog: NodeJS.Timeout | null = null;
  private stats: http.Server | null = null;
  private appKind = '?';
  private readonly startedAt = Date.now();
  private bound: string[] = [];

  constructor(opts: ServeOptions, argv: string[]) {
    this.opts = opts;
    this.argv = argv;
    this.log = createLogger(opts.logLevel, { role: 'master' });
    this.restarts = new Array(opts.workers).fill(0);
    this.crashStreak = new Array(opts.workers).fill(0);
  }

  async start(): Promise<number> {
    try {
      for (const text of this.opts.listen) {
        const h = await bindHandle(parseListenAddress(text));
        this.handles.push(h);
        if (h.addr.kind === 'unix' && this.opts.chmodSocket !== null) (await import('node:fs')).chmodSync(h.addr.path, this.opts.chmodSocket);
      }
    } catch (err) {
      process.stderr.write(`gatewire serve: ${(err as Error).message}\n`);
      this.closeHandles();
      return 1;
    }
    this.bound = this.handles.map((h) => describeBound(h.addr, h.port));
    const first: Worker[] = [];
    for (let slot = 0; slot < this.opts.workers; slot++) first.push(this.spawn(slot));
    const ok = await Promise.all(first.map((w) => w.ready));
    if (ok.includes(false)) {
      const why = first.find((w) => w.fatal)?.fatal ?? 'a worker exited during start-up';
      process.stderr.write(`gatewire serve: ${why}\n`);
      this.stopping = true;
      for (const w of this.workers.values()) w.child.kill('SIGKILL');
      this.closeHandles();
      return 1;
    }
    if (this.opts.stats) {
      try {
        this.stats = await startStatsServer(this.opts.stats, () => this.statsDocument());
      } catch (err) {
        this.log.error({ err }, `cannot start the stats server on ${this.opts.stats}`);
      }
    }
    this.watchdog = setInterval(() => this.checkWorkers(), Math.max(50, Math.min(500, (this.opts.timeout * 1000) / 4)));
    process.on('SIGHUP', () => this.reload());
    process.on('SIGTERM', () => this.stop('SIGTERM', this.opts.drainDelay));
    process.on('SIGINT', () => this.stop('SIGINT'));
    const n = this.opts.workers;
    process.stdout.write(`gatewire serve: listening on ${this.bound.join(', ')} (${n} worker${n === 1 ? '' : 's'}, ${this.appKind} app ${this.opts.app})\n`);
    return -1;
  }

  private spawn(slot: number): Worker {
    const id = this.nextId++;
    const child = fork(gatewireBin(), ['serve', ...this.argv], {
      env: { ...process.env, GATEWIRE_ROLE: 'worker', GATEWIRE_WORKER_ID: String(id) },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      execArgv: childNodeFlags(),
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
      startedAt: now,
      lastBeat: now,
      requests: 0,
      inflight: 0,
      connections: 0,
      rss: 0,
      ready,
      resolveReady,
      fatal: null,
      killedFor: null,
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
        this.appKind = msg.kind;
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
        w.requests = msg.requests;
        w.inflight = msg.inflight;
        w.connections = msg.connections;
        w.rss = msg.rss;
        break;
      case 'fatal':
        w.fatal = msg.message;
        break;
      case 'recycle':
        if (w.state === 'ready' && !this.stopping) this.replace(w, 'max-requests').catch(() => {});
        break;
    }
  }

  private onExit(w: Worker, code: number | null, signal: NodeJS.Signals | null): void {
    this.workers.delete(w.id);
    w.resolveReady(false);
    const planned = w.state === 'stopping' || this.stopping;
    if (planned) {
      this.log.debug({ worker: w.id, pid: w.child.pid, code, signal }, 'worker exited');
      return;
    }
    const lived = Date.now() - w.startedAt;
    this.restarts[w.slot]++;
    const why = w.killedFor ?? (signal ? `killed by ${signal}` : `exit code ${code}`);
    // A worker that dies quickly again and again (a broken app) is respawned ever more slowly.
    const streak = lived < 5000 ? ++this.crashStreak[w.slot] : (this.crashStreak[w.slot] = 0);
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

  /** Harakiri: a worker whose heartbeats stopped (event loop blocked) beyond --timeout is killed; onExit replaces it. */
  private checkWorkers(): void {
    const now = Date.now();
    const limit = this.opts.timeout * 1000;
    for (const w of this.workers.values()) {
      if (w.killedFor) continue;
      if (w.state === 'starting') {
        if (now - w.startedAt > Math.max(STARTUP_TIMEOUT_MS, limit)) this.kill(w, 'did not start in time');
      } else if (now - w.lastBeat > limit) {
        this.kill(w, `event loop blocked for more than ${this.opts.timeout} s (harakiri)`);
      }
    }
  }

  private kill(w: Worker, why: string): void {
    w.killedFor = why;
    this.log.error({ worker: w.id, pid: w.child.pid, why }, 'killing worker');
    w.child.kill('SIGKILL');
  }

  /** Starts a replacement for `old` in its slot, waits until it listens, then stops `old` gracefully. */
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
    if (w.child.connected) w.child.send({ t: 'stop' } satisfies ToWorker);
    else w.child.kill('SIGTERM');
    const t = setTimeout(
      () => {
        if (w.child.exitCode === null && w.child.signalCode === null) {
          this.log.error({ worker: w.id }, 'worker did not stop within --graceful-timeout: killing it');
          w.child.kill('SIGKILL');
        }
      },
      this.opts.gracefulTimeout * 1000 + 5000,
    );
    t.unref();
  }

  /** SIGHUP: replace every worker, one at a time, never dropping below N listening workers. */
  reload(): void {
    if (this.stopping) return;
    if (this.reloading) {
      this.reloadAgain = true;
      return;
    }
    this.log.info({ workers: this.workers.size }, 'SIGHUP: rolling reload');
    this.reloading = (async () => {
      do {
        this.reloadAgain = false;
        const current = [...this.workers.values()].filter((w) => w.state === 'ready');
        for (const w of current) {
          if (this.stopping) break;
          if (!this.workers.has(w.id) || w.state !== 'ready') continue;
          const ok = await this.replace(w, 'reload');
          if (!ok) break;
        }
      } while (this.reloadAgain && !this.stopping);
      this.log.info('rolling reload done');
      this.reloading = null;
    })();
  }

  /**
   * Graceful stop, after `drainSeconds` of serving as usual (--drain-delay: the orchestrator removes
   * this endpoint meanwhile). The listening sockets close when the stop begins, not when the last
   * worker exits: a connection that arrives while in-flight requests finish is refused at once (a
   * proxy retries that elsewhere, whatever the method) instead of waiting in a backlog nobody
   * accepts from, to be reset at exit.
   */
  async stop(signal: string, drainSeconds = 0): Promise<void> {
    if (this.stopping) {
      this.log.warn('second signal: killing the workers now');
      for (const w of this.workers.values()) w.child.kill('SIGKILL');
      this.closeHandles();
      process.exit(1);
    }
    this.stopping = true;
    if (drainSeconds > 0) {
      this.log.info({ signal, drainDelay: drainSeconds }, 'draining: serving as usual until the graceful stop');
      await new Promise((r) => setTimeout(r, drainSeconds * 1000));
    }
    this.log.info({ signal, workers: this.workers.size }, 'stopping gracefully');
    if (this.watchdog) clearInterval(this.watchdog);
    const exits = [...this.workers.values()].map((w) => new Promise<void>((r) => (w.child.exitCode !== null || w.child.signalCode !== null ? r() : w.child.once('exit', () => r()))));
    for (const w of this.workers.values()) this.stopWorker(w);
    this.closeHandles();
    await Promise.all(exits);
    this.stats?.close();
    this.log.info('stopped');
    process.exit(0);
  }

  private closeHandles(): void {
    for (const h of this.handles) h.close();
    this.handles = [];
  }

  private statsDocument() {
    const workers: WorkerStats[] = [...this.workers.values()].map((w) => ({
      id: w.id,
      pid: w.child.pid ?? 0,
      state: w.state,
      requests: w.requests,
      inflight: w.inflight,
      connections: w.connections,
      rss: w.rss,
      restarts: this.restarts[w.slot],
      startedAt: new Date(w.startedAt).toISOString(),
    }));
    return {
      pid: process.pid,
      version: 1,
      app: this.opts.app,
      interface: this.appKind,
      listen: this.bound,
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      workers,
      totals: totals(workers),
    };
  }
}
