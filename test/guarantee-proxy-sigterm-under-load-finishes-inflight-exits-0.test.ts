// The proxy stopped with SIGTERM while under load: every request in flight
// finishes with its full response, new connections are served until the
// listener closes and refused after (never accepted and then dropped), and the
// process exits 0.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseResponses, rawSession, sleep, startApp, startGuardedProxy } from './helpers/guarantee-stack.ts';

interface Outcome {
  /** 'reset': the connection was reset before a single byte came back (see below). */
  kind: 'ok' | 'refused' | 'reset' | 'other';
  detail: string;
  startedAt: number;
}

/** One request on a new connection (Connection: close); classified by what the client saw. */
async function oneRequest(port: number, path: string): Promise<Outcome> {
  const startedAt = Date.now();
  try {
    const r = await rawSession(
      port,
      (sock) => {
        sock.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      },
      { timeoutMs: 20000 },
    );
    const p = parseResponses(r.data);
    const res = p.responses[0];
    if (p.malformed === null && res?.status === 200 && (res.complete || (r.ended === 'end' && res.body.length > 0))) return { kind: 'ok', detail: res.body.toString(), startedAt };
    if (r.ended === 'reset' && r.data.length === 0) return { kind: 'reset', detail: 'reset before any byte', startedAt };
    return { kind: 'other', detail: `${res?.status ?? 'no response'} ${r.ended} ${JSON.stringify(r.data.toString('latin1').slice(0, 120))}`, startedAt };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { kind: code === 'ECONNREFUSED' ? 'refused' : 'other', detail: code ?? String(err), startedAt };
  }
}

test('SIGTERM under load: in-flight requests finish, new connections are refused only once the listener is closed, exit code 0', { timeout: 90000 }, async (t) => {
  const a = await startApp(t, 'A');
  const proxy = await startGuardedProxy(t, { upstreams: { app: { servers: [a.address] } } }, { args: ['--grace', '15000'] });

  // 40 slow requests (2 s at the app) in flight when the signal comes
  const slow = Array.from({ length: 40 }, () => oneRequest(proxy.port, '/slow?ms=2000'));
  // and a steady stream of quick ones on new connections, before and after it
  let stop = false;
  const quick: Outcome[] = [];
  const loops = Array.from({ length: 6 }, async () => {
    while (!stop) {
      const o = await oneRequest(proxy.port, '/hello');
      quick.push(o);
      if (o.kind === 'refused') await sleep(20);
    }
  });
  await sleep(700);
  const signalledAt = Date.now();
  proxy.proc.kill('SIGTERM');
  const code = await proxy.proc.exited;
  const exitedAt = Date.now();
  await sleep(300);
  stop = true;
  await Promise.all(loops);
  const slowOutcomes = await Promise.all(slow);

  assert.equal(code, 0, `exit code 0; output:\n${proxy.proc.output().slice(-2000)}`);
  assert.deepEqual(
    slowOutcomes.map((o) => `${o.kind} ${o.detail}`),
    slowOutcomes.map(() => 'ok A'),
    'every in-flight request completed with its full response',
  );
  const others = quick.filter((o) => o.kind === 'other');
  assert.deepEqual(others, [], 'every quick request was either answered in full or refused');
  const beforeSignal = quick.filter((o) => o.startedAt < signalledAt - 20);
  assert.ok(beforeSignal.length > 20, `${beforeSignal.length} quick requests before the signal`);
  assert.deepEqual(
    beforeSignal.filter((o) => o.kind !== 'ok'),
    [],
    'served normally before the signal',
  );
  // A connection still in the kernel's accept queue, or accepted but with its request not yet read,
  // when the listener closes is reset without a byte of answer (NGINX's graceful stop does the same
  // with its not-yet-read connections): the client knows nothing was processed, as with a refusal.
  // Only connections that raced the signal may see that.
  const resets = quick.filter((o) => o.kind === 'reset');
  assert.ok(
    resets.every((o) => o.startedAt >= signalledAt - 20),
    'a reset only for connections opened as the listener closed',
  );
  const afterExit = quick.filter((o) => o.startedAt > exitedAt);
  assert.ok(afterExit.length > 0 && afterExit.every((o) => o.kind === 'refused'), 'refused once the process is gone');
  // once refused, never served again: the listener does not come back
  const firstRefused = quick.findIndex((o) => o.kind === 'refused');
  const servedAfterRefusal = quick.filter((o, i) => i > firstRefused && o.kind === 'ok' && o.startedAt > quick[firstRefused].startedAt + 50);
  assert.deepEqual(servedAfterRefusal, []);
  t.diagnostic(
    `quick requests: ${quick.filter((o) => o.kind === 'ok').length} served, ${quick.filter((o) => o.kind === 'refused').length} refused, ${resets.length} reset unanswered as the listener closed; exit ${exitedAt - signalledAt} ms after SIGTERM`,
  );
});
