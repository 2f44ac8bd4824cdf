// `gatewire serve APP_MODULE ...`: the master (default), a managed worker
// (forked by the master, GATEWIRE_ROLE=worker), or the in-process server
// (--workers 0 / --no-master). Each role imports only its own code: the
// master never loads the app server, the app or pino.
import { isSupervisedWorker } from '../supervisor/worker.ts';
import { parseServeOptions, SERVE_USAGE, UsageError } from './options.ts';

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
  if (isSupervisedWorker()) return (await import('./worker.ts')).runManagedWorker(opts);
  if (opts.workers === 0) return (await import('./worker.ts')).runInProcess(opts);
  return (await import('./master.ts')).runMaster(opts, argv);
}
