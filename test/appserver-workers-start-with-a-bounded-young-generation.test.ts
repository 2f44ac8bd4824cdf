// Workers start with 8 MiB semi-spaces (appserver/worker-heap.ts): without it
// V8 grows a busy worker's young generation to 128 MiB of resident pages. A
// semi-space flag the user gave wins.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { workerExecArgv } from '../appserver/worker-heap.ts';
import { processTree } from '../bench/lib/procfs.ts';
import { startServe } from './helpers/appserver-clients.ts';
import { tempDir } from './helpers/net.ts';

test('workerExecArgv adds --max-semi-space-size=8 unless the user chose a size', () => {
  assert.deepEqual(workerExecArgv([], ''), ['--max-semi-space-size=8']);
  assert.deepEqual(workerExecArgv(['--enable-source-maps'], ''), ['--enable-source-maps', '--max-semi-space-size=8']);
  assert.deepEqual(workerExecArgv(['--max-semi-space-size=32'], ''), ['--max-semi-space-size=32']);
  assert.deepEqual(workerExecArgv([], '--max-semi-space-size=4'), []);
});

test('a forked worker runs with the flag (its command line, from /proc)', { timeout: 60_000 }, async () => {
  const { dir, cleanup } = tempDir('gw-heap-');
  const app = await startServe(['examples/hello.ts', '--listen', `unix:${dir}/app.sock`, '--workers', '1']);
  try {
    const master = app.child.pid!;
    const worker = processTree(master).find((p) => p !== master);
    assert.ok(worker, 'no worker process under the master');
    const argv = readFileSync(`/proc/${worker}/cmdline`, 'utf8').split('\0');
    assert.ok(argv.includes('--max-semi-space-size=8'), `worker command line: ${argv.join(' ')}`);
  } finally {
    await app.stop(10_000);
    cleanup();
  }
});
