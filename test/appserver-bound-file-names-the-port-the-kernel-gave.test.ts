// `gatewire serve --listen 127.0.0.1:0 --bound-file F` writes the address it
// really bound to F, with the master (workers) and in process (--workers 0),
// for a supervisor that must not pick a port itself and race other programs
// for it (`gatewire up` starts its appserver this way). The address in the
// file is the one that answers, and the same the "listening on" line names.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { requestVars, startServe, uwsgiRequest } from './helpers/appserver-clients.ts';
import { tempDir } from './helpers/net.ts';

describe('--bound-file', { timeout: 60_000 }, () => {
  for (const workers of ['1', '0']) {
    test(`--workers ${workers}: port 0 is reported as the bound port, which serves`, async (t) => {
      const { dir, cleanup } = tempDir('gw-bound-');
      const file = `${dir}/app.bound`;
      writeFileSync(file, '127.0.0.1:1\n'); // an earlier run's
      const app = await startServe(['examples/hello.ts', '--listen', '127.0.0.1:0', '--workers', workers, '--bound-file', file]);
      let stopped = false;
      t.after(async () => {
        if (!stopped) await app.stop(10_000);
        cleanup();
      });
      assert.ok(existsSync(file), 'the bound file exists once the server says it listens');
      const lines = readFileSync(file, 'utf8').split('\n');
      assert.equal(lines.at(-1), '', 'one address per line, newline-terminated');
      const [addr] = lines;
      const m = /^127\.0\.0\.1:(\d+)$/.exec(addr);
      assert.ok(m, `address ${addr}`);
      assert.notEqual(Number(m[1]), 0);
      assert.match(app.output(), new RegExp(`listening on ${addr.replace(/\./g, '\\.')}\\b`));
      assert.equal(existsSync(`${file}.${process.pid}.tmp`), false);
      const r = await uwsgiRequest(addr, requestVars('GET', '/'), undefined, { timeoutMs: 10_000 });
      assert.equal(r.status, 200);
      await app.stop(10_000);
      stopped = true;
      assert.equal(existsSync(file), false, 'removed on a graceful stop');
    });
  }

  test('GATEWIRE_BOUND_FILE sets it from the environment', async (t) => {
    const { dir, cleanup } = tempDir('gw-bound-env-');
    const file = `${dir}/env.bound`;
    const app = await startServe(['examples/hello.ts', '--listen', '127.0.0.1:0', '--workers', '0'], { GATEWIRE_BOUND_FILE: file });
    t.after(async () => {
      await app.stop(10_000);
      cleanup();
    });
    assert.match(readFileSync(file, 'utf8'), /^127\.0\.0\.1:[1-9]\d*\n$/);
  });
});
