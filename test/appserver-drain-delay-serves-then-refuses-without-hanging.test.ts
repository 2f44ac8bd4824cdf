// --drain-delay: after SIGTERM the appserver serves as usual for that long (the
// window in which an orchestrator removes its endpoint, as a Kubernetes preStop
// sleep gives), then stops gracefully. Once the stop begins, a new connection is
// refused at once (a proxy retries that elsewhere, whatever the method) even
// while an in-flight request still finishes: it is never accepted into a
// backlog nobody reads, to be reset when the process exits.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { requestVars, startServe, uwsgiRequest } from './helpers/appserver-clients.ts';
import { freePort } from './helpers/net.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One uwsgi GET; the error code when the connection fails. */
async function tryGet(address: string, uri: string, timeoutMs = 10_000): Promise<number | string> {
  try {
    return (await uwsgiRequest(address, requestVars('GET', uri), undefined, { timeoutMs })).status;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? (err as Error).message;
  }
}

for (const workers of ['2', '0']) {
  test(`--drain-delay with --workers ${workers}: served during the delay, refused at once after it, in-flight finishes, exit 0`, { timeout: 60_000 }, async () => {
    const address = `127.0.0.1:${await freePort()}`;
    const proc = await startServe(['examples/hello.ts', '--listen', address, '--workers', workers, '--drain-delay', '2', '--graceful-timeout', '10']);
    try {
      assert.equal(await tryGet(address, '/'), 200);
      const t0 = Date.now();
      proc.kill('SIGTERM');
      // the whole delay: new connections are served as before
      const during: Array<number | string> = [];
      while (Date.now() - t0 < 1500) {
        during.push(await tryGet(address, '/'));
        await sleep(50);
      }
      assert.ok(during.length >= 10, `${during.length} requests during the delay`);
      assert.deepEqual([...new Set(during)], [200], `during the drain delay: ${during.join(' ')}`);
      // a request that outlives the delay
      const slow = tryGet(address, '/slow?ms=3000', 20_000);
      await proc.waitFor(/stopping gracefully/, 10_000);
      assert.ok(Date.now() - t0 >= 1900, `the stop began ${Date.now() - t0} ms after SIGTERM (delay 2 s)`);
      await sleep(300);
      const c0 = Date.now();
      const after = await tryGet(address, '/', 5000);
      assert.equal(after, 'ECONNREFUSED', 'a connection after the stop began is refused');
      assert.ok(Date.now() - c0 < 1000, `refused at once, not after ${Date.now() - c0} ms`);
      assert.equal(await slow, 200, 'the in-flight request finishes');
      assert.equal(await proc.exited, 0, proc.output().slice(-2000));
    } finally {
      await proc.stop(2000);
    }
  });
}
