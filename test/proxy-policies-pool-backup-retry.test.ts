// UpstreamPool.select: primaries through the policy, backups only when no primary
// is available (NGINX's `backup`), and an exclude set for retries.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { UpstreamPool } from '../proxy/upstreams.ts';
import { ctx, letter, recordingLogger, upstreamConfig } from './helpers/proxy-pool.ts';

const cfg = (balance: 'round_robin' | 'least_conn' | 'ip_hash' | 'random_two' = 'round_robin') =>
  upstreamConfig({
    balance,
    servers: [{ address: 'a:1', weight: 2 }, { address: 'b:1' }, { address: 'c:1', backup: true }, { address: 'd:1', backup: true }],
  });

test('backups take no traffic while a primary is available', () => {
  for (const balance of ['round_robin', 'least_conn', 'ip_hash', 'random_two'] as const) {
    const pool = new UpstreamPool(cfg(balance), { logger: recordingLogger() });
    for (let i = 0; i < 200; i++) {
      const h = pool.select(ctx({ clientIp: `10.0.${i}.1` }))!;
      assert.ok(!h.backup, `${balance} chose backup ${h.address}`);
    }
  }
  const pool = new UpstreamPool(cfg(), { logger: recordingLogger() });
  assert.equal(Array.from({ length: 6 }, () => letter(pool.select(ctx()))).join(' '), 'a b a a b a');
});

test('when every primary is passively down, backups are used round robin; primaries come back after fail_timeout', () => {
  const pool = new UpstreamPool(cfg(), { logger: recordingLogger() });
  const [a, b] = pool.hosts;
  const t0 = Date.now();
  a.markFailure(t0);
  assert.equal(letter(pool.select(ctx())), 'b');
  b.markFailure(t0);
  assert.equal(Array.from({ length: 4 }, () => letter(pool.select(ctx()))).join(' '), 'c d c d');
  // An actively unhealthy backup is skipped too.
  pool.hosts[2].healthy = false;
  assert.equal(Array.from({ length: 2 }, () => letter(pool.select(ctx()))).join(' '), 'd d');
  pool.hosts[3].healthy = false;
  assert.equal(pool.select(ctx()), null, 'nothing available → null (503)');
  a.markSuccess();
  assert.equal(letter(pool.select(ctx())), 'a');
});

test('exclude: a retry never goes back to a server already tried, and may fall to a backup', () => {
  const pool = new UpstreamPool(cfg(), { logger: recordingLogger() });
  const [a, b, c] = pool.hosts;
  for (let i = 0; i < 10; i++) assert.equal(pool.select(ctx(), new Set([a])), b);
  assert.equal(pool.select(ctx(), new Set([a, b])), c);
  assert.equal(pool.select(ctx(), new Set(pool.hosts)), null);
  assert.equal(pool.hosts.length, 4);
  const snap = pool.snapshot();
  assert.equal(snap.name, 'app');
  assert.deepEqual(
    snap.hosts.map((h) => [h.address, h.backup, h.available]),
    [
      ['a:1', false, true],
      ['b:1', false, true],
      ['c:1', true, true],
      ['d:1', true, true],
    ],
  );
});

test('per-server max_fails/fail_timeout override the upstream ones', () => {
  const pool = new UpstreamPool(
    upstreamConfig({ max_fails: 1, servers: [{ address: 'a:1', max_fails: 3, fail_timeout_ms: 500 }, { address: 'b:1' }] }),
    { logger: recordingLogger() },
  );
  const [a, b] = pool.hosts;
  assert.equal(a.maxFails, 3);
  assert.equal(a.failTimeoutMs, 500);
  assert.equal(b.maxFails, 1);
  assert.equal(b.failTimeoutMs, 10_000);
});
