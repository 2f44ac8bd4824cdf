// `gatewire serve` forks its workers with 2 MB semi-spaces (cli/node-flags.ts
// appWorkerNodeFlags: body garbage is freed sooner, the worker's peak RSS
// under large bodies drops by 20-30 MiB), whatever the master was started
// with — unless the user chose a size, on the command line or in NODE_OPTIONS.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { tempDir } from './helpers/net.ts';
import { GATEWIRE_BIN, ROOT, startProcess } from './helpers/procs.ts';

function workerFlags(nodeArgs: string[], nodeOptions = ''): string[] {
  const script = `
    import { appWorkerNodeFlags } from ${JSON.stringify(path.join(ROOT, 'cli/node-flags.ts'))};
    process.stdout.write(JSON.stringify(appWorkerNodeFlags()));
  `;
  const out = execFileSync(process.execPath, [...nodeArgs, '--import', path.join(ROOT, 'bin/typescript-loader.js'), '--input-type=module', '-e', script], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, NODE_OPTIONS: nodeOptions },
    timeout: 60_000,
  });
  return JSON.parse(out) as string[];
}

const semi = (flags: string[]) => flags.filter((f) => f.includes('max-semi-space-size'));

test('workers get 2 MB semi-spaces whether the master ran with the shebang flags or none', () => {
  assert.deepEqual(semi(workerFlags([])), ['--max-semi-space-size=2']);
  assert.deepEqual(semi(workerFlags(['--max-semi-space-size=4', '--no-maglev'])), ['--max-semi-space-size=2']);
  assert.ok(workerFlags([]).includes('--no-maglev'), 'the other gatewire flags are still passed on');
});

test("a size the user chose is kept: the master's command line or NODE_OPTIONS", () => {
  assert.deepEqual(semi(workerFlags(['--max-semi-space-size=8'])), ['--max-semi-space-size=8']);
  assert.deepEqual(semi(workerFlags([], '--max-semi-space-size=16')), []);
});

test('a running gatewire serve worker has the flag on its command line', async () => {
  const { dir, cleanup } = tempDir('gw-young-');
  const serve = startProcess(process.execPath, [GATEWIRE_BIN, 'serve', 'examples/hello.ts', '--listen', `unix:${dir}/app.sock`, '--workers', '1'], { cwd: ROOT });
  try {
    await serve.waitFor(/gatewire serve: listening on /, 60_000);
    const master = serve.child.pid!;
    const children = readFileSync(`/proc/${master}/task/${master}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
    assert.equal(children.length, 1, `one worker: ${children.join(' ')}`);
    const argv = readFileSync(`/proc/${children[0]}/cmdline`, 'utf8').split('\0');
    assert.deepEqual(semi(argv), ['--max-semi-space-size=2']);
    assert.deepEqual(semi(readFileSync(`/proc/${master}/cmdline`, 'utf8').split('\0')), [], 'the master itself was started without it');
  } finally {
    await serve.stop(5000);
    cleanup();
  }
});
