// Each selection policy against its NGINX meaning, as pure units.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Host } from '../proxy/hosts.ts';
import {
  ConsistentHash,
  createPolicy,
  hashKeyOf,
  IpHash,
  ipHashBytes,
  LeastConnections,
  RandomTwo,
  RoundRobin,
} from '../proxy/selection-policies.ts';
import { ctx, letter, lettered } from './helpers/proxy-pool.ts';

const picks = (n: number, f: () => Host | null): string => Array.from({ length: n }, () => letter(f())).join(' ');

test('round_robin is NGINX smooth weighted round robin: weights 5,1,1 give a a b a c a a', () => {
  const table: Array<[number[], number, string]> = [
    [[5, 1, 1], 14, 'a a b a c a a a a b a c a a'],
    [[1, 1, 1], 6, 'a b c a b c'],
    [[2, 1], 6, 'a b a a b a'],
    [[3, 2], 5, 'a b a b a'],
    [[1], 3, 'a a a'],
  ];
  for (const [weights, n, expected] of table) {
    const hosts = lettered(weights);
    const rr = new RoundRobin();
    assert.equal(picks(n, () => rr.select(hosts, ctx())), expected, `weights ${weights}`);
  }
  const hosts = lettered([5, 1, 1]);
  const rr = new RoundRobin();
  const counts = { a: 0, b: 0, c: 0 } as Record<string, number>;
  for (let i = 0; i < 700; i++) counts[letter(rr.select(hosts, ctx()))]++;
  assert.deepEqual(counts, { a: 500, b: 100, c: 100 });
  assert.equal(rr.select([], ctx()), null);
});

test('round_robin skips an unavailable server without disturbing the others', () => {
  const [a, b, c] = lettered([1, 1, 1]);
  const rr = new RoundRobin();
  assert.equal(picks(3, () => rr.select([a, b, c], ctx())), 'a b c');
  // b is down: the pool hands the policy only a and c.
  assert.equal(picks(4, () => rr.select([a, c], ctx())), 'a c a c');
});

test('least_conn picks the fewest in-flight relative to weight; ties go round robin', () => {
  const [a, b, c] = lettered([1, 1, 1]);
  const lc = new LeastConnections();
  a.inflight = 2;
  assert.equal(picks(4, () => lc.select([a, b, c], ctx())), 'b c b c');
  b.inflight = 1;
  assert.equal(picks(2, () => lc.select([a, b, c], ctx())), 'c c');
  // weights: 2 in flight on weight 2 equals 1 on weight 1; the tie is weighted round robin.
  const [x, y] = [new Host({ address: 'x:1', weight: 2 }), new Host({ address: 'y:1', weight: 1 })];
  x.inflight = 2;
  y.inflight = 1;
  assert.equal(picks(3, () => lc.select([x, y], ctx())), 'x y x');
  x.inflight = 3;
  assert.equal(picks(2, () => lc.select([x, y], ctx())), 'y y');
  // As requests start the counts move: least_conn spreads a burst evenly.
  const hosts = lettered([1, 1, 1]);
  const lc2 = new LeastConnections();
  for (let i = 0; i < 30; i++) lc2.select(hosts, ctx())!.acquire();
  assert.deepEqual(
    hosts.map((h) => h.inflight),
    [10, 10, 10],
  );
});

test('ip_hash hashes the first three octets of IPv4 like NGINX (89, *113 + byte, % 6271)', () => {
  assert.deepEqual(ipHashBytes('1.2.3.4'), [1, 2, 3]);
  assert.deepEqual(ipHashBytes('::ffff:1.2.3.4'), [1, 2, 3]);
  assert.equal(ipHashBytes('2001:db8::1').length, 16);
  assert.deepEqual(ipHashBytes('2001:db8::1').slice(0, 4), [0x20, 0x01, 0x0d, 0xb8]);
  assert.equal(ipHashBytes('2001:db8::1')[15], 1);
  const hosts = lettered([1, 1, 1]);
  const ih = new IpHash();
  // By hand: ((89*113+1)%6271 = 3787, (3787*113+2)%6271 = 1505, (1505*113+3)%6271 = 751; 751 % 3 = 1 → b.
  assert.equal(letter(ih.select(hosts, ctx({ clientIp: '1.2.3.4' }))), 'b');
  // The whole /24 sticks together, IPv4-mapped IPv6 too.
  for (const ip of ['1.2.3.1', '1.2.3.200', '::ffff:1.2.3.77']) assert.equal(letter(ih.select(hosts, ctx({ clientIp: ip }))), 'b', ip);
  // b down: NGINX re-hashes, the hash keeps accumulating: 3341, 1275, 6116; 6116 % 3 = 2 → c.
  assert.equal(letter(ih.select([hosts[0], hosts[2]], ctx({ clientIp: '1.2.3.4' }), hosts)), 'c');
});

test('ip_hash is sticky, spreads clients, and a server going down moves only its own clients', () => {
  const hosts = lettered([1, 1, 1]);
  const ih = new IpHash();
  const before = new Map<string, string>();
  const counts: Record<string, number> = { a: 0, b: 0, c: 0 };
  for (let i = 0; i < 3000; i++) {
    const ip = `10.${(i >> 8) & 255}.${i & 255}.9`;
    const h = letter(ih.select(hosts, ctx({ clientIp: ip })));
    assert.equal(letter(ih.select(hosts, ctx({ clientIp: ip }))), h, 'same client, same server');
    before.set(ip, h);
    counts[h]++;
  }
  for (const n of Object.values(counts)) assert.ok(n > 600 && n < 1400, `spread ${JSON.stringify(counts)}`);
  const up = [hosts[0], hosts[2]];
  for (const [ip, h] of before) {
    const now = letter(ih.select(up, ctx({ clientIp: ip }), hosts));
    if (h !== 'b') assert.equal(now, h, `${ip} moved although its server is up`);
    else assert.notEqual(now, 'b');
  }
  // IPv6 clients hash on all 16 bytes: two addresses of one /64 may land apart, each stays put.
  const v6 = new Set<string>();
  for (let i = 1; i < 40; i++) {
    const ip = `2001:db8::${i.toString(16)}`;
    const h = letter(ih.select(hosts, ctx({ clientIp: ip })));
    assert.equal(letter(ih.select(hosts, ctx({ clientIp: ip }))), h);
    v6.add(h);
  }
  assert.ok(v6.size > 1, 'IPv6 addresses differing only in the last bytes are spread');
});

test('hash key: header (case-insensitive name), cookie, uri; a missing key goes round robin', () => {
  const headers = { 'x-user': 'u42', cookie: 'theme=dark; session=abc123; x=1' };
  assert.equal(hashKeyOf({ header: 'X-User' }, ctx({ headers })), 'u42');
  assert.equal(hashKeyOf({ cookie: 'session' }, ctx({ headers })), 'abc123');
  assert.equal(hashKeyOf({ uri: true }, ctx({ url: '/a?b=1' })), '/a?b=1');
  assert.equal(hashKeyOf({ cookie: 'none' }, ctx({ headers })), undefined);
  assert.equal(hashKeyOf({ header: 'x-absent' }, ctx({ headers })), undefined);
  const hosts = lettered([1, 1, 1]);
  const ch = new ConsistentHash({ header: 'x-user' });
  assert.equal(picks(6, () => ch.select(hosts, ctx())), 'a b c a b c');
  const pinned = letter(ch.select(hosts, ctx({ headers })));
  assert.equal(picks(3, () => ch.select(hosts, ctx({ headers }))), `${pinned} ${pinned} ${pinned}`);
});

const KEYS = Array.from({ length: 10_000 }, (_, i) => `user-${i}`);
const servers = (n: number, weights: number[] = []) =>
  Array.from({ length: n }, (_, i) => new Host({ address: `10.0.0.${i + 1}:9000`, weight: weights[i] ?? 1 }));

function mapping(ch: ConsistentHash, hosts: Host[], all: Host[] = hosts): string[] {
  return KEYS.map((k) => ch.lookup(k, hosts, all)!.address);
}

test('consistent hash (ketama, 160 points per weight): adding a 5th server to 4 moves about 1/5 of 10,000 keys, all to it', () => {
  const four = servers(4);
  const five = [...four, new Host({ address: '10.0.0.5:9000' })];
  const before = mapping(new ConsistentHash({ uri: true }), four);
  const after = mapping(new ConsistentHash({ uri: true }), five);
  let moved = 0;
  for (let i = 0; i < KEYS.length; i++) {
    if (before[i] === after[i]) continue;
    moved++;
    assert.equal(after[i], '10.0.0.5:9000', 'a key that moves, moves to the new server');
  }
  const fraction = moved / KEYS.length;
  assert.ok(fraction >= 0.1 && fraction <= 0.3, `moved ${fraction}`);
  const counts = new Map<string, number>();
  for (const a of before) counts.set(a, (counts.get(a) ?? 0) + 1);
  for (const [a, n] of counts) assert.ok(n > 1500 && n < 3500, `${a} has ${n} of 10000 keys`);
});

test('consistent hash: removing a server, or it going down, moves only its keys', () => {
  const five = servers(5);
  const ch = new ConsistentHash({ uri: true });
  const before = mapping(ch, five);
  const gone = five[2];
  const four = five.filter((h) => h !== gone);
  for (const [label, after] of [
    ['removed', mapping(new ConsistentHash({ uri: true }), four)],
    ['down', mapping(ch, four, five)],
  ] as const) {
    let moved = 0;
    for (let i = 0; i < KEYS.length; i++) {
      if (before[i] === gone.address) {
        assert.notEqual(after[i], gone.address);
        moved++;
      } else assert.equal(after[i], before[i], `${label}: a key of a remaining server moved`);
    }
    assert.ok(moved > 1000 && moved < 3000, `${label}: ${moved}`);
  }
});

test('consistent hash: weight 2 gets about twice the keys; order of the server list does not matter', () => {
  const hosts = servers(3, [2, 1, 1]);
  const counts = new Map<string, number>();
  for (const a of mapping(new ConsistentHash({ uri: true }), hosts)) counts.set(a, (counts.get(a) ?? 0) + 1);
  const heavy = counts.get('10.0.0.1:9000')!;
  assert.ok(heavy > 4000 && heavy < 6000, `weight 2 got ${heavy}`);
  assert.deepEqual(mapping(new ConsistentHash({ uri: true }), [...hosts].reverse()), mapping(new ConsistentHash({ uri: true }), hosts));
});

test('random_two draws two distinct servers and takes the less loaded', () => {
  const [a, b, c] = lettered([1, 1, 1]);
  a.inflight = 5;
  // Scripted draws: 0.0 → a; then 0.5 over the remaining (b, c) → c; c is less loaded.
  const script = [0.0, 0.5, 0.9, 0.0];
  const r2 = new RandomTwo(() => script.shift()!);
  assert.equal(letter(r2.select([a, b, c], ctx())), 'c');
  // 0.9 → c; 0.0 over (a, b) → a; c (0) beats a (5).
  assert.equal(letter(r2.select([a, b, c], ctx())), 'c');
  // With Math.random: the most loaded of three is never chosen, the two idle ones share.
  const r = new RandomTwo();
  const counts: Record<string, number> = { a: 0, b: 0, c: 0 };
  for (let i = 0; i < 3000; i++) counts[letter(r.select([a, b, c], ctx()))]++;
  assert.equal(counts.a, 0);
  assert.ok(counts.b > 1000 && counts.c > 1000, JSON.stringify(counts));
  // Load follows: a burst spreads out.
  const hosts = lettered([1, 1, 1, 1]);
  for (let i = 0; i < 400; i++) r.select(hosts, ctx())!.acquire();
  for (const h of hosts) assert.ok(h.inflight > 70 && h.inflight < 130, `${h.address} ${h.inflight}`);
  assert.equal(letter(r.select([b], ctx())), 'b');
  assert.equal(r.select([], ctx()), null);
});

test('createPolicy maps balance names to the policies', () => {
  assert.ok(createPolicy({ balance: 'round_robin', hash_key: null }) instanceof RoundRobin);
  assert.ok(createPolicy({ balance: 'least_conn', hash_key: null }) instanceof LeastConnections);
  assert.ok(createPolicy({ balance: 'ip_hash', hash_key: null }) instanceof IpHash);
  assert.ok(createPolicy({ balance: 'hash', hash_key: { uri: true } }) instanceof ConsistentHash);
  assert.ok(createPolicy({ balance: 'random_two', hash_key: null }) instanceof RandomTwo);
});
