// An appserver frozen with SIGSTOP (alive, connections open, answering
// nothing): the request sent to it ends in 504 at the read timeout, the active
// health checks take it out, all traffic moves to the other server; after
// SIGCONT it comes back only after `rise` passing checks, then gets traffic.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { eventually, startApp, startGuardedProxy } from './helpers/guarantee-stack.ts';

const INTERVAL_MS = 400;
const RISE = 3;
const PROBE_TIMEOUT_MS = 300;

test('SIGSTOP: 504 at the read timeout, health checks mark it down, traffic moves; after SIGCONT it is back after `rise` checks', { timeout: 90000 }, async (t) => {
  const [a, b] = await Promise.all([startApp(t, 'A'), startApp(t, 'B')]);
  const proxy = await startGuardedProxy(t, {
    upstreams: {
      app: {
        servers: [a.address, b.address],
        timeouts: { read: '1500ms' },
        // only the active checks decide here; no retry hides the 504
        max_fails: 0,
        retries: { tries: 1 },
        health_check: { path: '/healthz', interval: `${INTERVAL_MS}ms`, timeout: `${PROBE_TIMEOUT_MS}ms`, rise: RISE, fall: 2 },
      },
    },
  });
  const hostOf = async (address: string) => (await proxy.status()).upstreams[0].hosts.find((h) => h.address === address);
  await eventually(async () => (await hostOf(a.address))?.healthy === true, 10000, 'A starts healthy');
  for (let i = 0; i < 4; i++) assert.equal((await fetch(`${proxy.url}/hello`)).status, 200);

  a.proc.kill('SIGSTOP');
  const started = Date.now();
  // round robin: one of these two goes to the frozen A
  const answers = await Promise.all(
    [0, 1].map(async () => {
      const r = await fetch(`${proxy.url}/hello`, { signal: AbortSignal.timeout(20000) });
      return { status: r.status, text: await r.text(), ms: Date.now() - started };
    }),
  );
  const frozen = answers.find((r) => r.status !== 200);
  assert.deepEqual(
    answers.map((r) => r.status).sort(),
    [200, 504],
    JSON.stringify(answers),
  );
  assert.equal(frozen?.text, '504 Gateway Timeout\n');
  assert.ok((frozen?.ms ?? 0) >= 1400, `504 only at the read timeout (1.5 s), not before: ${frozen?.ms} ms`);

  await eventually(async () => (await hostOf(a.address))?.healthy === false, 15000, 'the health checks mark A down');
  const moved = await Promise.all(Array.from({ length: 20 }, () => fetch(`${proxy.url}/hello`).then((r) => r.text())));
  assert.deepEqual([...new Set(moved)], ['hello from B'], 'all traffic moved to B');

  a.proc.kill('SIGCONT');
  const resumedAt = Date.now();
  await eventually(async () => (await hostOf(a.address))?.healthy === true, 20000, 'A is healthy again after SIGCONT');
  const backAfter = Date.now() - resumedAt;
  // `rise` consecutive passes, one per interval: the first may be a probe sent just before SIGCONT
  // (answered once the process runs again, within its timeout), the others come an interval apart
  assert.ok(backAfter >= (RISE - 1) * INTERVAL_MS - PROBE_TIMEOUT_MS - 50, `back after ${backAfter} ms; rise ${RISE} × interval ${INTERVAL_MS} ms`);
  t.diagnostic(`504 after ${frozen?.ms} ms; healthy again ${backAfter} ms after SIGCONT (rise ${RISE}, interval ${INTERVAL_MS} ms)`);
  assert.match(proxy.proc.output(), /failed its health checks; taken out of rotation/);

  const names = new Set<string>();
  for (let i = 0; i < 10; i++) names.add(await (await fetch(`${proxy.url}/hello`)).text());
  assert.deepEqual([...names].sort(), ['hello from A', 'hello from B'], 'A gets traffic again');
});
