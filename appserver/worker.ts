// A worker process (forked by the master, which owns the listening sockets)
// and the in-process mode (--workers 0: this process binds and serves).
import type { Server } from 'node:net';
import { AppLoadError, type LoadedApp, loadApp } from './app.ts';
import { applySocketMode, describeBound, listenServer, parseListenAddress, removeBoundFile, removeSocketFile, writeBoundFile } from '../supervisor/listen.ts';
import { createLogger, type Logger } from './log.ts';
import type { ServeOptions } from './options.ts';
import { AppServer } from './server.ts';
import { joinSupervisor, reportFatal, workerId } from '../supervisor/worker.ts';
import { startStatsServer, type WorkerStats } from './stats.ts';
import { installLightGlobals } from './undici-globals.ts';

async function load(opts: ServeOptions, log: Logger): Promise<LoadedApp | null> {
  // Before the app's module runs, so that its `new Response(...)` is the light one.
  installLightGlobals();
  try {
    return await loadApp(opts.app, opts.interface);
  } catch (err) {
    const message = err instanceof AppLoadError ? err.message : String((err as Error)?.stack ?? err);
    log.error({ app: opts.app }, message);
    reportFatal(message);
    return null;
  }
}

/** Managed worker: receives the master's bound sockets, serves, heartbeats, stops when told. */
export async function runManagedWorker(opts: ServeOptions): Promise<number> {
  const log = createLogger(opts.logLevel, { worker: workerId() });
  const app = await load(opts, log);
  if (app === null) return 1;
  const server = new AppServer(app, opts, log);
  const link = joinSupervisor(
    {
      listen: (handle) =>
        new Promise((resolve, reject) => {
          const listener = server.createListener();
          listener.once('error', reject);
          listener.listen(handle as never, () => resolve());
        }),
      stop: (why) => {
        log.info({ why, inflight: server.counters.inflight }, 'worker stopping gracefully');
        return server.stop(opts.gracefulTimeout * 1000);
      },
      load: () => {
        const c = server.counters;
        return { requests: c.requests, inflight: c.inflight, connections: c.connections };
      },
    },
    // The heartbeat is how the master sees a blocked event loop (harakiri).
    { heartbeatMs: Math.max(50, Math.min(1000, (opts.timeout * 1000) / 4)), info: app.kind, drainDelayMs: opts.drainDelay * 1000 },
  );
  let recycleAsked = false;
  if (opts.maxRequests > 0) {
    server.onRequestDone = (n) => {
      if (!recycleAsked && n >= opts.maxRequests) {
        recycleAsked = true;
        log.info({ requests: n }, 'max-requests reached: asking the master for a replacement');
        link.recycle();
      }
    };
  }
  return -1;
}

/** --workers 0: bind, serve and handle signals in this process. */
export async function runInProcess(opts: ServeOptions): Promise<number> {
  const log = createLogger(opts.logLevel);
  const app = await load(opts, log);
  if (app === null) {
    process.stderr.write(`gatewire serve: cannot load the app (see the log line above)\n`);
    return 1;
  }
  const server = new AppServer(app, opts, log);
  if (opts.boundFile !== null) removeBoundFile(opts.boundFile);
  const addrs = opts.listen.map(parseListenAddress);
  const bound: string[] = [];
  const listeners: Server[] = [];
  /** Only the socket files this process created are ever removed. */
  const owned: typeof addrs = [];
  try {
    for (const addr of addrs) {
      const l = server.createListener();
      listeners.push(l);
      const port = await listenServer(l, addr);
      owned.push(addr);
      applySocketMode(addr, opts.chmodSocket);
      bound.push(describeBound(addr, port));
    }
  } catch (err) {
    process.stderr.write(`gatewire serve: ${(err as Error).message}\n`);
    for (const l of listeners) l.close();
    for (const a of owned) removeSocketFile(a);
    return 1;
  }
  const startedAt = new Date().toISOString();
  const stats = opts.stats
    ? await startStatsServer(opts.stats, () => {
        const c = server.counters;
        const w: WorkerStats = { id: 0, pid: process.pid, state: 'ready', requests: c.requests, inflight: c.inflight, connections: c.connections, rss: process.memoryUsage.rss(), restarts: 0, startedAt };
        return {
          pid: process.pid,
          version: 1,
          app: opts.app,
          interface: app.kind,
          listen: bound,
          uptimeSeconds: Math.round(process.uptime()),
          workers: [w],
          totals: { requests: c.requests, inflight: c.inflight, restarts: 0 },
        };
      })
    : null;
  let stopping = false;
  const stop = async (signal: string, drainSeconds = 0) => {
    if (stopping) {
      log.warn('second signal: exiting now');
      for (const a of owned) removeSocketFile(a);
      process.exit(1);
    }
    stopping = true;
    if (drainSeconds > 0) {
      log.info({ signal, drainDelay: drainSeconds }, 'draining: serving as usual until the graceful stop');
      await new Promise((r) => setTimeout(r, drainSeconds * 1000));
    }
    log.info({ signal, inflight: server.counters.inflight }, 'stopping gracefully');
    await server.stop(opts.gracefulTimeout * 1000);
    stats?.close();
    for (const a of owned) removeSocketFile(a);
    if (opts.boundFile !== null) removeBoundFile(opts.boundFile);
    process.exit(0);
  };
  process.on('SIGTERM', () => stop('SIGTERM', opts.drainDelay));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => log.warn('SIGHUP: a rolling reload needs workers (--workers N >= 1); ignored'));
  if (opts.boundFile !== null) writeBoundFile(opts.boundFile, bound);
  process.stdout.write(`gatewire serve: listening on ${bound.join(', ')} (in-process, ${app.kind} app ${opts.app})\n`);
  return -1;
}
