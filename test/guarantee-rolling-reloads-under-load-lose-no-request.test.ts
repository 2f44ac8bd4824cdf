// Reloads under a steady load of several thousand requests: a rolling reload
// of the appserver's workers (SIGHUP to its master) and a config reload of the
// proxy (SIGHUP, with a changed upstream so new pools and connections are
// built and the old ones drained), twice each, one pair overlapping — and not
// one request fails. Every request is counted, over both transports.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { Agent, request } from 'undici';
import { type ProxySpec, sleep, startApp, startGuardedProxy } from './helpers/guarantee-stack.ts';

const TARGET = 4000;

test('appserver rolling reload and proxy config reload under load: zero failed requests, counted', { timeout: 120000 }, async (t) => {
  const app = await startApp(t, 'A', { workers: 2, args: ['--log-level', 'info'] });
  const spec = (generation: number): ProxySpec => ({
    routes: [
      { match: { path_prefix: '/' }, upstream: 'native' },
      { match: { path_prefix: '/classic' }, upstream: 'classic', strip_prefix: true },
    ],
    upstreams: {
      // connections_per_server changes with every generation: the upstream is rebuilt, the old one drained
      native: { protocol: 'gatewire', servers: [app.address], connections_per_server: 2 + (generation % 2) },
      classic: { protocol: 'uwsgi', servers: [app.address], connections_per_server: 32 + (generation % 2) },
    },
  });
  const proxy = await startGuardedProxy(t, spec(0), { args: [] });
  const agent = new Agent({ connections: 16, keepAliveTimeout: 10000 });
  t.after(() => agent.close());

  const ok = { native: 0, classic: 0 };
  const failures: string[] = [];
  let stop = false;
  const loop = async (i: number) => {
    const kind = i % 2 === 0 ? 'native' : 'classic';
    const path = kind === 'native' ? '/hello' : '/classic/hello';
    while (!stop) {
      try {
        const res = await request(`${proxy.url}${path}`, { dispatcher: agent, headersTimeout: 20000, bodyTimeout: 20000 });
        const text = await res.body.text();
        if (res.statusCode === 200 && text === 'hello from A') ok[kind]++;
        else failures.push(`${kind}: ${res.statusCode} ${text.slice(0, 80)}`);
      } catch (err) {
        failures.push(`${kind}: ${(err as Error).message}`);
      }
    }
  };
  const loops = Array.from({ length: 16 }, (_, i) => loop(i));
  const total = () => ok.native + ok.classic + failures.length;
  const waitFor = async (n: number) => {
    const deadline = Date.now() + 60000;
    while (total() < n && Date.now() < deadline) await sleep(20);
  };

  const appReloads = () => app.proc.output().match(/rolling reload done/g)?.length ?? 0;
  const proxyReloads = () => proxy.proc.output().match(/configuration reloaded/g)?.length ?? 0;
  const reloadApp = async () => {
    const before = appReloads();
    app.proc.kill('SIGHUP');
    const deadline = Date.now() + 60000;
    while (appReloads() === before && Date.now() < deadline) await sleep(50);
    assert.ok(appReloads() > before, 'the appserver finished its rolling reload');
  };
  const reloadProxy = async (generation: number) => {
    const before = proxyReloads();
    proxy.rewrite(spec(generation));
    proxy.proc.kill('SIGHUP');
    const deadline = Date.now() + 30000;
    while (proxyReloads() === before && Date.now() < deadline) await sleep(50);
    assert.ok(proxyReloads() > before, 'the proxy reloaded its config');
  };

  const pidsBefore = new Set(workerPids(app.proc.child.pid as number));
  await waitFor(300);
  await reloadApp();
  await waitFor(total() + 300);
  await reloadProxy(1);
  await waitFor(total() + 300);
  // both at once
  await Promise.all([reloadApp(), reloadProxy(2)]);
  await waitFor(Math.max(TARGET, total() + 300));
  stop = true;
  await Promise.all(loops);

  const pidsAfter = workerPids(app.proc.child.pid as number);
  t.diagnostic(`${ok.native} native + ${ok.classic} uwsgi requests answered, ${failures.length} failed; workers ${[...pidsBefore]} → ${pidsAfter}`);
  assert.deepEqual(failures.slice(0, 20), [], `${failures.length} failed requests`);
  assert.ok(total() >= TARGET, `${total()} requests`);
  assert.ok(ok.native > 500 && ok.classic > 500, 'both transports carried load');
  assert.equal(pidsAfter.length, 2);
  assert.ok(
    pidsAfter.every((p) => !pidsBefore.has(p)),
    'every worker was replaced',
  );
});

/** Child pids of the appserver master, from /proc. */
function workerPids(master: number): number[] {
  try {
    return readFileSync(`/proc/${master}/task/${master}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}
