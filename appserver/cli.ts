// `gatewire serve APP_MODULE ...`: the master (default), a managed worker
// (forked by the master, GATEWIRE_ROLE=worker), or the in-process server
// (--workers 0 / --no-master).
import { Master } from './master.ts';
import { parseServeOptions, SERVE_USAGE, UsageError } from './options.ts';
import { runInProcess, runManagedWorker } from './worker.ts';

export async function runServe(argv: string[]): Promise<number> {
  let opts: ReturnType<typeof parseServeOptions>;
  try {
    opts = parseServeOptions(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`gatewire serve: ${err.message}\n\n${SERVE_USAGE}\n`);
    return 2;
  }
  if (opts === 'help') {
    process.stdout.write(`${SERVE_USAGE}\n`);
    return 0;
  }
  if (process.env.GATEWIRE_ROLE === 'worker' && process.send) return runManagedWorker(opts);
  if (opts.workers === 0) return runInProcess(opts);
  return new Master(opts, argv).start();
}
