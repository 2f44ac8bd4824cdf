// The master and its workers, counted: a SIGKILLed worker is replaced and no
// request after it fails; SIGHUP replaces every worker under a steady load
// with zero failed requests; SIGTERM lets in-flight requests finish and exits
// 0; --max-requests recycles; a worker whose event loop is blocked beyond
// --timeout is killed and replaced (harakiri); --stats reports it all.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, test } from 'node:test';
import { requestVars, startServe, uwsgiRequest } from './helpers/appserver-clients.ts';
import { freePort, tempDir } from './helpers/net.ts';

interface Stats {
  pid: number;
  workers: Array<{ id: number; pid: number; state: string; requests: number; inflight: number; rss: number; restarts: number }>;
  totals: { requests: number; inflight: number; restarts: number };
}

async function stats(port: number): Promise<Stats> {
  const res = await fetch(`http://127.0.0.1:${port}/`);
  return (await res.json()) as Stats;
}

async function eventually<T>(fn: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 20000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch((err) => err as T);
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms (last: ${JSON.stringify(v)})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function get(addr: string, path: string): Promise<{ status: number; body: string }> {
  const r = await uwsgiRequest(addr, requestVars('GET', path), undefined, { timeoutMs: 30_000 });
  return { status: r.status, body: r.body.toString() };
}

/** `concurrency` loops of uwsgi requests until stop() is called; every non-200 or error counts as failed. */
function load(addr: string, path: string, concurrency: number) {
  let running = true;
  const counts = { ok: 0, failed: 0, errors: [] as string[] };
  const loops = Array.from({ length: concurrency }, async () => {
    while (running) {
      try {
        const r = await get(addr, path);
        if (r.status === 200) counts.ok++;
        else {
          counts.failed++;
          counts.errors.push(`status ${r.status}`);
        }
      } catch (err) {
        counts.failed++;
        counts.errors.push((err as Error).message);
      }
    }
  });
  return {
    counts,
    async stop() {
      running = false;
      await Promise.all(loops);
      return counts;
    },
  };
}

describe('appserver workers', { timeout: 180_000 }, () => {
  test('a SIGKILLed worker is respawned and every request after the kill succeeds', async (t) => {
    const { dir, cleanup } = tempDir('gw-wk-');
    const statsPort = await freePort();
    const addr = `unix:${dir}/app.sock`;
    const app = await startServe(['examples/hello.ts', '--listen', addr, '--workers', '2', '--stats', `127.0.0.1:${statsPort}`]);
    t.after(async () => {
      await app.stop(10_000);
      cleanup();
    });
    const before = await stats(statsPort);
    assert.equal(before.workers.length, 2);
    for (let i = 0; i < 20; i++) assert.equal((await get(addr, '/')).status, 200);
    const victim = before.workers[0].pid;
    process.kill(victim, 'SIGKILL');
    let ok = 0;
    for (let i = 0; i < 200; i++) {
      const r = await get(addr, '/');
      assert.equal(r.status, 200);
      ok++;
    }
    assert.equal(ok, 200);
    const after = await eventually(
      () => stats(statsPort),
      (s) => s.workers?.length === 2 && s.workers.every((w) => w.state === 'ready') && !s.workers.some((w) => w.pid === victim),
    );
    assert.equal(after.totals.restarts, 1);
    assert.match(app.output(), /worker died: respawning/);
  });

  test('SIGHUP rolling reload under a steady load: every worker replaced, zero failed requests', async (t) => {
    const { dir, cleanup } = tempDir('gw-wk-');
    const statsPort = await freePort();
    const tcpPort = await freePort();
    const unixAddr = `unix:${dir}/app.sock`;
    const tcpAddr = `127.0.0.1:${tcpPort}`;
    const app = await startServe(['examples/hello.ts', '--listen', unixAddr, '--listen', tcpAddr, '--workers', '2', '--stats', `127.0.0.1:${statsPort}`]);
    t.after(async () => {
      await app.stop(10_000);
      cleanup();
    });
    const pidsBefore = new Set((await stats(statsPort)).workers.map((w) => w.pid));
    const l1 = load(unixAddr, '/slow?ms=5', 6);
    const l2 = load(tcpAddr, '/', 2);
    await new Promise((r) => setTimeout(r, 500));
    for (let round = 1; round <= 2; round++) {
      const done = app.output().split('rolling reload done').length - 1;
      app.kill('SIGHUP');
      await eventually(
        async () => app.output().split('rolling reload done').length - 1,
        (n) => n > done,
        60_000,
      );
      await new Promise((r) => setTimeout(r, 300));
    }
    const c1 = await l1.stop();
    const c2 = await l2.stop();
    // "rolling reload done" is logged once the last new worker serves; the old one it replaced may
    // still be finishing its in-flight requests (and listed) for a moment on a loaded machine
    const s = await eventually(
      () => stats(statsPort),
      (st) => st.workers.length === 2,
      10_000,
    );
    assert.equal(s.workers.length, 2);
    for (const w of s.workers) assert.ok(!pidsBefore.has(w.pid), `worker ${w.pid} was not replaced`);
    assert.deepEqual(c1.errors.slice(0, 5), [], `unix: ${c1.failed} failed of ${c1.ok + c1.failed}`);
    assert.deepEqual(c2.errors.slice(0, 5), [], `tcp: ${c2.failed} failed of ${c2.ok + c2.failed}`);
    assert.equal(c1.failed + c2.failed, 0);
    assert.ok(c1.ok + c2.ok >= 200, `only ${c1.ok + c2.ok} requests ran during the reloads`);
  });

  test('SIGTERM: in-flight requests complete, the socket file is removed, exit code 0', async (t) => {
    const { dir, cleanup } = tempDir('gw-wk-');
    const path = `${dir}/app.sock`;
    const addr = `unix:${path}`;
    const app = await startServe(['examples/hello.ts', '--listen', addr, '--workers', '2', '--graceful-timeout', '20']);
    t.after(async () => {
      await app.stop(10_000);
      cleanup();
    });
    const inflight = Array.from({ length: 6 }, () => get(addr, '/slow?ms=2000'));
    await new Promise((r) => setTimeout(r, 700));
    app.kill('SIGTERM');
    const results = await Promise.all(inflight);
    for (const r of results) {
      assert.equal(r.status, 200);
      assert.equal(r.body, 'slow\n');
    }
    assert.equal(await app.exited, 0);
    assert.equal(existsSync(path), false, 'the Unix socket file was left behind');
  });

  test('--max-requests recycles workers without failing a request', async (t) => {
    const { dir, cleanup } = tempDir('gw-wk-');
    const addr = `unix:${dir}/app.sock`;
    const app = await startServe(['examples/hello.ts', '--listen', addr, '--workers', '1', '--max-requests', '20']);
    t.after(async () => {
      await app.stop(10_000);
      cleanup();
    });
    // A replacement is started first and the old worker keeps serving until it
    // listens, so recycling shows after some time rather than at request 21.
    const pids = new Set<string>();
    let requests = 0;
    const deadline = Date.now() + 60_000;
    while (pids.size < 3 && Date.now() < deadline) {
      const r = await get(addr, '/pid');
      assert.equal(r.status, 200);
      requests++;
      pids.add(r.body.trim());
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.ok(pids.size >= 3, `expected recycling, saw pids ${[...pids].join(', ')} in ${requests} requests`);
  });

  test('harakiri: a worker blocked beyond --timeout is killed and replaced', async (t) => {
    const { dir, cleanup } = tempDir('gw-wk-');
    const addr = `unix:${dir}/app.sock`;
    const statsPort = await freePort();
    const app = await startServe(['examples/hello.ts', '--listen', addr, '--workers', '1', '--timeout', '1.5', '--stats', `127.0.0.1:${statsPort}`]);
    t.after(async () => {
      await app.stop(10_000);
      cleanup();
    });
    const first = (await get(addr, '/pid')).body.trim();
    // The blocked request itself is lost with its worker: the client sees the connection closed without a response.
    const blocked = await get(addr, '/block?ms=30000').then(
      (r) => `status ${r.status}`,
      (err: Error) => err.message,
    );
    assert.doesNotMatch(blocked, /status 200/);
    const next = await eventually(
      () => get(addr, '/pid'),
      (r) => r.status === 200,
    );
    assert.notEqual(next.body.trim(), first);
    assert.match(app.output(), /harakiri/);
    const s = await stats(statsPort);
    assert.equal(s.totals.restarts, 1);
  });

  test('--stats reports per-worker pid, requests, in-flight, RSS and restarts', async (t) => {
    const { dir, cleanup } = tempDir('gw-wk-');
    const addr = `unix:${dir}/app.sock`;
    const statsPort = await freePort();
    const app = await startServe(['examples/hello.ts', '--listen', addr, '--workers', '2', '--stats', `127.0.0.1:${statsPort}`]);
    t.after(async () => {
      await app.stop(10_000);
      cleanup();
    });
    for (let i = 0; i < 30; i++) await get(addr, '/');
    const s = await eventually(
      () => stats(statsPort),
      (v) => v.totals?.requests >= 30,
    );
    assert.equal(s.workers.length, 2);
    for (const w of s.workers) {
      assert.ok(w.pid > 0);
      assert.equal(typeof w.requests, 'number');
      assert.equal(w.inflight, 0);
      assert.ok(w.rss > 1024 * 1024, `rss ${w.rss}`);
      assert.equal(w.restarts, 0);
    }
  });
});
