// Passive health, NGINX semantics: max_fails failures within fail_timeout mark a
// server down for fail_timeout; max_fails 0 disables it; after the pause one failure
// of the first try marks it down again, one success clears it.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Host, parseAddress } from '../proxy/hosts.ts';

test('max_fails failures within fail_timeout take a host down for fail_timeout', () => {
  const h = new Host({ address: '127.0.0.1:9000', max_fails: 3, fail_timeout_ms: 10_000 });
  const t = 1_000_000;
  h.markFailure(t);
  h.markFailure(t + 1000);
  assert.equal(h.available(t + 1000), true, 'two of three failures: still up');
  h.markFailure(t + 2000);
  assert.equal(h.available(t + 2000), false);
  assert.equal(h.available(t + 11_999), false);
  assert.equal(h.available(t + 12_001), true, 'back after fail_timeout');
  // First try after the pause fails: down again at once (NGINX keeps fails until a success).
  h.markFailure(t + 12_001);
  assert.equal(h.available(t + 12_002), false);
  assert.equal(h.available(t + 22_002), true);
  h.markSuccess();
  assert.equal(h.fails, 0);
  h.markFailure(t + 22_003);
  assert.equal(h.available(t + 22_004), true, 'after a success it takes max_fails again');
});

test('failures spread wider than fail_timeout do not add up', () => {
  const h = new Host({ address: 'a:1', max_fails: 2, fail_timeout_ms: 1000 });
  const t = 5_000_000;
  h.markFailure(t);
  h.markFailure(t + 1500);
  assert.equal(h.available(t + 1500), true);
  h.markFailure(t + 1600);
  assert.equal(h.available(t + 1600), false);
});

test('max_fails 0 disables passive health; defaults are 1 and 10s like NGINX', () => {
  const off = new Host({ address: 'a:1', max_fails: 0 });
  for (let i = 0; i < 100; i++) off.markFailure(1000 + i);
  assert.equal(off.available(1100), true);
  const d = new Host({ address: 'a:1' });
  assert.equal(d.maxFails, 1);
  assert.equal(d.failTimeoutMs, 10_000);
  d.markFailure(0);
  assert.equal(d.available(9_999), false);
  assert.equal(d.available(10_001), true);
});

test('available() combines draining, active health and passive health; inflight counts', () => {
  const h = new Host({ address: '[::1]:80', weight: 3, backup: true });
  assert.equal(h.address, '[::1]:80');
  assert.deepEqual(h.target, { kind: 'tcp', host: '::1', port: 80 });
  h.acquire();
  h.acquire();
  h.release();
  assert.equal(h.inflight, 1);
  h.healthy = false;
  assert.equal(h.available(), false);
  h.healthy = true;
  h.draining = true;
  assert.equal(h.available(), false);
  let idle = 0;
  h.onIdle = () => idle++;
  h.release();
  h.release();
  assert.equal(h.inflight, 0, 'never negative');
  assert.equal(idle, 1, 'onIdle fires once when a draining host empties');
  const s = h.snapshot();
  assert.equal(s.weight, 3);
  assert.equal(s.backup, true);
  assert.equal(s.requests, 2);
  assert.equal(s.draining, true);
});

test('addresses: unix paths, http URLs and IPv6 are parsed and normalised', () => {
  assert.deepEqual(parseAddress('unix:/tmp/x.sock'), { kind: 'unix', path: '/tmp/x.sock' });
  assert.deepEqual(parseAddress('http://app:8000'), { kind: 'tcp', host: 'app', port: 8000 });
  assert.equal(new Host({ address: 'http://127.0.0.1:8000' }).address, '127.0.0.1:8000');
  assert.equal(new Host({ address: 'unix:/tmp/x.sock' }).address, 'unix:/tmp/x.sock');
  assert.throws(() => parseAddress('nohost'));
});
