// The supervisor's master turns V8's optimizing compiler off at run time
// (supervisor/supervisor.ts masterCompilers: TurboFan's code pages cost a
// master 6 MB of RSS the first time one of its functions got hot). The flag
// is set through v8.setFlagsFromString after V8 has started, which Node
// documents as possibly doing nothing: this fails loudly if a Node or V8
// upgrade stops honouring it. A control run without the call shows the same
// hot function does get optimized here.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { ROOT } from './helpers/procs.ts';

function optimizedAfterHotLoop(callMasterCompilers: boolean): boolean {
  const script = `
    import { masterCompilers } from ${JSON.stringify(path.join(ROOT, 'supervisor/supervisor.ts'))};
    if (${callMasterCompilers}) masterCompilers();
    const status = new Function('f', 'return %GetOptimizationStatus(f)');
    function hot(o) { return JSON.parse(JSON.stringify(o)).a + o.b * 2; }
    let s = 0;
    for (let i = 0; i < 2e6; i++) s += hot({ a: i, b: i & 7 });
    // bit 4 of V8's OptimizationStatus: the function runs optimized code
    process.stdout.write(String((status(hot) & 16) !== 0 && s > 0));
  `;
  const out = execFileSync(process.execPath, ['--allow-natives-syntax', '--import', path.join(ROOT, 'bin/typescript-loader.js'), '--input-type=module', '-e', script], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 60_000,
  });
  return out.trim() === 'true';
}

test('a hot function is optimized in a plain Node process (the control)', () => {
  assert.equal(optimizedAfterHotLoop(false), true);
});

test('after masterCompilers() the same hot function never leaves the interpreter and baseline code', () => {
  assert.equal(optimizedAfterHotLoop(true), false);
});
