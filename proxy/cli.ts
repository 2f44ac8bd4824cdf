// `gatewire proxy --config FILE [--check]`: load and validate the config (nginx -t
// with --check), serve, reload on SIGHUP (a bad new config is logged and the
// running one kept), stop gracefully on SIGTERM/SIGINT (close-with-grace: stop
// accepting, let in-flight exchanges finish, flush the log, then exit 0). With
// --workers N (or `workers:` in the config) this process becomes the master of
// N workers (proxy/master.ts); a worker it forks comes back here and runs
// proxy/worker.ts.
import { availableParallelism } from 'node:os';
import closeWithGrace from 'close-with-grace';
import { createProxyLog } from './access-log.ts';
import { startYoungGc } from './young-gc.ts';
import { ConfigError, loadConfig, type ProxyConfig } from './config.ts';
import { ProxyServer } from './server.ts';
import { isSupervisedWorker } from '../supervisor/worker.ts';

const USAGE = `usage: gatewire proxy --config FILE [--check]

  --config FILE   the proxy config (YAML or JSON); default ./gatewire.yaml
  --check         validate the config and exit (0: valid, 1: invalid), like nginx -t
  --grace MS      how long a graceful stop waits for in-flight requests (default 10000)
  --workers N     worker processes accepting on the listening socket, or auto (one per core);
                  overrides workers: in the config; 1 (the default) serves in this process`;

interface ProxyArgs {
  config: string;
  check: boolean;
  graceMs: number;
  workers: number | 'auto' | undefined;
}

function parseArgs(argv: string[]): ProxyArgs | string {
  let config = 'gatewire.yaml';
  let check = false;
  let graceMs = 10_000;
  let workers: number | 'auto' | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--config' || a === '-c') {
      const v = argv[++i];
      if (v === undefined) return '--config needs a file';
      config = v;
    } else if (a.startsWith('--config=')) config = a.slice(9);
    else if (a === '--check' || a === '-t') check = true;
    else if (a === '--grace') {
      graceMs = Number(argv[++i]);
      if (!Number.isFinite(graceMs) || graceMs < 0) return '--grace needs a number of milliseconds';
    } else if (a === '--workers' || a.startsWith('--workers=')) {
      const v = a === '--workers' ? argv[++i] : a.slice(10);
      if (v === 'auto') workers = 'auto';
      else {
        workers = Number(v);
        if (!Number.isInteger(workers) || workers < 1) return `--workers needs a number of processes (1 or more) or auto, got '${v ?? ''}'`;
      }
    } else if (a === '--help' || a === '-h') return '';
    else return `unknown option '${a}'`;
  }
  return { config, check, graceMs, workers };
}

/** `auto`: one worker per core the process may use, as NGINX's worker_processes auto. */
export function workerCount(workers: number | 'auto'): number {
  return workers === 'auto' ? availableParallelism() : workers;
}

export async function runProxy(argv: string[]): Promise<number> {
  const args = parseArgs(argv);
  if (typeof args === 'string') {
    if (args === '') {
      process.stdout.write(`${USAGE}\n`);
      return 0;
    }
    process.stderr.write(`gatewire proxy: ${args}\n\n${USAGE}\n`);
    return 2;
  }
  if (isSupervisedWorker()) return (await import('./worker.ts')).runProxyWorker(args.graceMs);
  let config: ProxyConfig;
  try {
    config = await loadConfig(args.config);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.stderr.write(`gatewire proxy: configuration file ${args.config} test failed\n`);
      return 1;
    }
    throw err;
  }
  if (args.check) {
    process.stdout.write(`gatewire proxy: configuration file ${args.config} test is successful\n`);
    return 0;
  }
  const workers = workerCount(args.workers ?? config.workers);
  if (workers > 1) return (await import('./master.ts')).runProxyMaster({ configFile: args.config, config, workers, graceMs: args.graceMs });

  const { log, flush, flushSync } = createProxyLog(config.log.level, config.log.flush_interval_ms);
  startYoungGc();
  // Metrics are read on the admin server only: without it, prom-client is not even loaded
  const metrics = config.admin ? new (await import('./metrics.ts')).ProxyMetrics() : null;
  const proxy = new ProxyServer(config, { logger: log, metrics });
  let address: string;
  try {
    address = await proxy.listen();
  } catch (err) {
    process.stderr.write(`gatewire proxy: cannot listen on ${config.listen.host}:${config.listen.port}: ${(err as Error).message}\n`);
    await proxy.close().catch(() => {});
    return 1;
  }
  let admin: { close(): Promise<void>; address: string } | null = null;
  if (config.admin && metrics) {
    const { startAdmin } = await import('./admin.ts');
    try {
      admin = await startAdmin({ host: config.admin.host, port: config.admin.port, metrics, status: () => proxy.status(), logger: log });
    } catch (err) {
      process.stderr.write(`gatewire proxy: cannot listen on admin ${config.admin.host}:${config.admin.port}: ${(err as Error).message}\n`);
      await proxy.close().catch(() => {});
      return 1;
    }
  }
  process.stdout.write(`gatewire proxy listening on ${address}${admin ? ` (admin http://${admin.address})` : ''}\n`);

  let reloading = Promise.resolve();
  const onHup = () => {
    flush();
    reloading = reloading.then(async () => {
      try {
        const next = await loadConfig(args.config);
        const { changed } = proxy.reload(next);
        log.info({ config: args.config, changed }, 'configuration reloaded');
        process.stdout.write(`gatewire proxy: configuration reloaded (${changed.length ? `new: ${changed.join(', ')}` : 'no upstream changed'})\n`);
      } catch (err) {
        const msg = err instanceof ConfigError ? err.message : (err as Error).message;
        log.error({ config: args.config, problems: msg }, 'configuration reload failed; keeping the running configuration');
        process.stderr.write(`${msg}\ngatewire proxy: reload failed, keeping the running configuration\n`);
      }
    });
  };
  process.on('SIGHUP', onHup);

  const grace = closeWithGrace({ delay: args.graceMs, skip: ['SIGHUP'] as never, logger: { error: (m: unknown) => log.error(m) } }, async ({ signal, err }) => {
    if (err) log.error({ err }, 'fatal error, closing');
    else log.info({ signal }, 'closing gracefully');
    process.removeListener('SIGHUP', onHup);
    // Tunnels (WebSockets) get the grace period less a margin, so they are closed before close-with-grace gives up.
    await Promise.all([proxy.close(Math.max(0, args.graceMs - Math.min(500, args.graceMs / 10))), admin?.close()]);
    flushSync();
  });
  void grace;
  return -1;
}
