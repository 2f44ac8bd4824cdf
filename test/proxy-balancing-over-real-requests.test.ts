// Each balance policy measured over real requests through the proxy to three
// gatewire appservers that say who they are: weighted round robin gives the
// exact NGINX shares, least_conn avoids the busy server, ip_hash and hash are
// sticky per key yet spread keys, random_two uses every server, and backup
// servers only serve when every primary is down.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type Backend, call, countBy, startAppserver, startProxy } from './helpers/proxy-harness.ts';

async function three(t: Parameters<typeof startAppserver>[0]): Promise<Backend[]> {
  return Promise.all([startAppserver(t, 'A'), startAppserver(t, 'B'), startAppserver(t, 'C')]);
}

async function who(url: string, opts: Parameters<typeof call>[1] = {}): Promise<string> {
  const r = await call(url, opts);
  assert.equal(r.status, 200, r.text);
  return r.text.startsWith('{') ? (r.json().name as string) : r.text;
}

test('round_robin with weights 3,1,1 gives 30/10/10 of 50 requests', { timeout: 90000 }, async (t) => {
  const [a, b, c] = await three(t);
  const proxy = await startProxy(t, {
    upstreams: { app: { balance: 'round_robin', servers: [{ address: a.address, weight: 3 }, b.address, c.address] } },
  });
  const names: string[] = [];
  for (let i = 0; i < 50; i++) names.push(await who(`${proxy.url}/rr`));
  const counts = countBy(names);
  assert.deepEqual([counts.get('A'), counts.get('B'), counts.get('C')], [30, 10, 10]);
  // smooth: the heavy server never gets more than its share in a row (a a b a c, not a a a b c)
  assert.ok(!names.join('').includes('AAA'), names.join(''));
});

test('least_conn sends nothing to the server that is busy with a slow request', { timeout: 90000 }, async (t) => {
  const [a, b, c] = await three(t);
  const proxy = await startProxy(t, { upstreams: { app: { balance: 'least_conn', servers: [a.address, b.address, c.address] } } });
  const slow = who(`${proxy.url}/slow?ms=4000`);
  await new Promise((r) => setTimeout(r, 500));
  const names: string[] = [];
  for (let i = 0; i < 20; i++) names.push(await who(`${proxy.url}/quick`));
  const busy = await slow;
  const counts = countBy(names);
  assert.equal(counts.get(busy), undefined, `the busy server ${busy} got ${counts.get(busy)} requests`);
  const others = ['A', 'B', 'C'].filter((n) => n !== busy);
  // ties among idle servers are broken by round robin
  assert.deepEqual(
    others.map((n) => counts.get(n)),
    [10, 10],
  );
});

test('ip_hash: one client address always lands on one server; different /24s spread', { timeout: 90000 }, async (t) => {
  const backends = await three(t);
  const proxy = await startProxy(t, { upstreams: { app: { balance: 'ip_hash', servers: backends.map((b) => b.address) } } });
  const chosen = new Map<string, string>();
  for (let net = 1; net <= 12; net++) {
    const from = `127.0.${net}.7`;
    const seen = new Set<string>();
    for (let i = 0; i < 4; i++) seen.add(await who(`${proxy.url}/ip`, { from }));
    assert.equal(seen.size, 1, `${from} went to ${[...seen]}`);
    chosen.set(from, [...seen][0]);
  }
  // NGINX hashes the first three octets: 127.0.5.7 and 127.0.5.200 are the same client network
  assert.equal(await who(`${proxy.url}/ip`, { from: '127.0.5.200' }), chosen.get('127.0.5.7'));
  assert.ok(new Set(chosen.values()).size >= 2, `12 networks all went to ${[...new Set(chosen.values())]}`);
});

test('hash on a header is sticky per value and spreads values', { timeout: 90000 }, async (t) => {
  const backends = await three(t);
  const proxy = await startProxy(t, {
    upstreams: { app: { balance: 'hash', hash_key: { header: 'x-user' }, servers: backends.map((b) => b.address) } },
  });
  const chosen = new Map<string, string>();
  for (let u = 0; u < 15; u++) {
    const seen = new Set<string>();
    for (let i = 0; i < 3; i++) seen.add(await who(`${proxy.url}/h`, { headers: { 'x-user': `user-${u}` } }));
    assert.equal(seen.size, 1, `user-${u} went to ${[...seen]}`);
    chosen.set(`user-${u}`, [...seen][0]);
  }
  assert.ok(new Set(chosen.values()).size >= 2, `15 users all went to ${[...new Set(chosen.values())]}`);
});

test('random_two uses every server', { timeout: 90000 }, async (t) => {
  const backends = await three(t);
  const proxy = await startProxy(t, { upstreams: { app: { balance: 'random_two', servers: backends.map((b) => b.address) } } });
  const names: string[] = [];
  for (let i = 0; i < 60; i++) names.push(await who(`${proxy.url}/r2`));
  const counts = countBy(names);
  assert.equal(counts.size, 3, JSON.stringify([...counts]));
});

test('a backup server gets traffic only when every primary is down', { timeout: 90000 }, async (t) => {
  const [a, b, c] = await three(t);
  const proxy = await startProxy(t, {
    upstreams: {
      app: { servers: [a.address, b.address, { address: c.address, backup: true }], max_fails: 1, fail_timeout: '30s', retries: { tries: 3 } },
    },
  });
  const before: string[] = [];
  for (let i = 0; i < 20; i++) before.push(await who(`${proxy.url}/b`));
  const counts = countBy(before);
  assert.deepEqual([counts.get('A'), counts.get('B'), counts.get('C')], [10, 10, undefined]);
  await Promise.all([a.proc.stop(), b.proc.stop()]);
  const after: string[] = [];
  for (let i = 0; i < 10; i++) after.push(await who(`${proxy.url}/b`));
  assert.deepEqual([...new Set(after)], ['C']);
});
