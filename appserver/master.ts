// `gatewire serve`'s master: the shared pre-fork Supervisor running N workers
// of `gatewire serve` (see supervisor/supervisor.ts for the process model),
// plus uWSGI-style --stats. It never loads the app (the first worker to load
// it reports its interface), the worker code or pino: a supervisor's memory
// is what a bare Node costs plus a few MB.
import { appWorkerNodeFlags } from '../cli/node-flags.ts';
import { parseListenAddress, removeBoundFile, writeBoundFile } from '../supervisor/listen.ts';
import { createMasterLog } from '../supervisor/log.ts';
import { Supervisor } from '../supervisor/supervisor.ts';
import type { ServeOptions } from './options.ts';
import type { StatsDocument } from './stats.ts';

// fs.writeSync on fds 1 and 2 rather than process.stdout/stderr, whose streams a master does not need
const { writeSync } = process.getBuiltinModule('node:fs');

export async function runMaster(opts: ServeOptions, argv: string[]): Promise<number> {
  const log = createMasterLog(opts.logLevel, { role: 'master' });
  if (opts.boundFile !== null) removeBoundFile(opts.boundFile);
  const sup = new Supervisor({
    name: 'gatewire serve',
    workerArgs: ['serve', ...argv],
    workers: opts.workers,
    listen: opts.listen.map(parseListenAddress),
    chmodSocket: opts.chmodSocket,
    heartbeatTimeoutMs: opts.timeout * 1000,
    gracefulTimeoutMs: opts.gracefulTimeout * 1000,
    drainDelayMs: opts.drainDelay * 1000,
    log,
    execArgv: appWorkerNodeFlags(),
  });
  const failed = await sup.start();
  if (failed !== null) {
    writeSync(2, `gatewire serve: ${failed}\n`);
    return 1;
  }
  const startedAt = Date.now();
  let stats: { close(): void } | null = null;
  if (opts.stats) {
    // node:http only when asked for
    const { startStatsServer, totals } = await import('./stats.ts');
    const collect = (): StatsDocument => {
      const workers = sup.snapshot().map((w) => ({
        id: w.id,
        pid: w.pid,
        state: w.state,
        requests: w.requests,
        inflight: w.inflight,
        connections: w.connections,
        rss: w.rss,
        restarts: w.restarts,
        startedAt: w.startedAt,
      }));
      return {
        pid: process.pid,
        version: 1,
        app: opts.app,
        interface: sup.info,
        listen: sup.bound,
        uptimeSeconds: Math.round((Date.now() - startedAt) / 1000),
        workers,
        totals: totals(workers),
      };
    };
    try {
      stats = await startStatsServer(opts.stats, collect);
    } catch (err) {
      log.error({ err }, `cannot start the stats server on ${opts.stats}`);
    }
  }
  sup.handleSignals(() => {
    stats?.close();
    if (opts.boundFile !== null) removeBoundFile(opts.boundFile);
    process.exit(0);
  });
  if (opts.boundFile !== null) writeBoundFile(opts.boundFile, sup.bound);
  const n = opts.workers;
  writeSync(1, `gatewire serve: listening on ${sup.bound.join(', ')} (${n} worker${n === 1 ? '' : 's'}, ${sup.info} app ${opts.app})\n`);
  return -1;
}
