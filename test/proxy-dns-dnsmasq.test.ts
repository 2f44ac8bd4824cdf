// DNS discovery against a real dnsmasq on loopback: a `resolve: true` server is
// every A/AAAA record of its name; the pool follows the records as the hosts file
// changes (added records get traffic, removed ones drain), keeps the last known
// records when resolution fails, and re-resolves on demand.
import assert from 'node:assert/strict';
import http from 'node:http';
import { test } from 'node:test';
import type { Host } from '../proxy/hosts.ts';
import { UpstreamPool } from '../proxy/upstreams.ts';
import { startDnsmasq } from './helpers/proxy-dnsmasq.ts';
import { freePort } from './helpers/net.ts';
import { ctx, recordingLogger, upstreamConfig } from './helpers/proxy-pool.ts';

/** node:http servers on several loopback addresses, all on one port, each answering with its own address. */
async function backends(ips: string[], port: number): Promise<() => Promise<void>> {
  const servers = await Promise.all(
    ips.map(
      (ip) =>
        new Promise<http.Server>((resolve, reject) => {
          const s = http.createServer((_req, res) => res.end(ip));
          s.once('error', reject);
          s.listen(port, ip, () => resolve(s));
        }),
    ),
  );
  return async () => {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  };
}

function get(host: Host): Promise<string> {
  const t = host.target;
  assert.equal(t.kind, 'tcp');
  return new Promise((resolve, reject) => {
    const req = http.get({ host: t.kind === 'tcp' ? t.host : '', port: t.kind === 'tcp' ? t.port : 0, path: '/', agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(body));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

/** Sends n requests through the pool (select → real HTTP request → release) and counts answers per backend. */
async function traffic(pool: UpstreamPool, n: number): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const h = pool.select(ctx());
    assert.ok(h, 'the pool has a host');
    h.acquire();
    try {
      const who = await get(h);
      counts[who] = (counts[who] ?? 0) + 1;
    } finally {
      h.release();
    }
  }
  return counts;
}

function waitFor<T>(pool: UpstreamPool, event: string, timeoutMs = 10_000): Promise<T[]> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no '${event}' event within ${timeoutMs} ms; hosts: ${pool.hosts.map((h) => h.address)}`)), timeoutMs);
    pool.once(event, (...args: T[]) => {
      clearTimeout(t);
      resolve(args);
    });
  });
}

async function until(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const addrs = (pool: UpstreamPool) => pool.hosts.map((h) => `${h.address}${h.draining ? ' (draining)' : ''}`);

test('resolve: true follows dnsmasq: records added get traffic, removed ones drain, then leave', { timeout: 60_000 }, async (t) => {
  const port = await freePort('127.0.0.2');
  const stopBackends = await backends(['127.0.0.2', '127.0.0.3', '127.0.0.4'], port);
  t.after(stopBackends);
  const dns = await startDnsmasq(['127.0.0.2 app.test', '127.0.0.3 app.test']);
  t.after(() => dns.stop());
  const logger = recordingLogger();
  const pool = new UpstreamPool(
    upstreamConfig({
      servers: [{ address: `app.test:${port}`, resolve: true }],
      resolve_interval_ms: 200,
      resolver: { servers: [dns.server], timeout_ms: 1000 },
    }),
    { logger },
  );
  t.after(() => pool.stop());
  assert.equal(pool.hosts.length, 0, 'nothing before the first resolution');
  await pool.start();
  assert.deepEqual(addrs(pool), [`127.0.0.2:${port}`, `127.0.0.3:${port}`]);
  assert.ok(pool.hosts.every((h) => h.resolvedFrom === `app.test:${port}`));
  assert.match(dns.proc.output(), /query\[A\] app\.test from 127\.0\.0\.1/, 'the query went to our dnsmasq');
  assert.deepEqual(await traffic(pool, 10), { '127.0.0.2': 5, '127.0.0.3': 5 });

  // A request in flight on .2 while .2 leaves DNS and .4 arrives.
  const leaving = pool.hosts[0];
  leaving.acquire();
  const changed = waitFor<Host[]>(pool, 'hosts');
  await dns.setHosts(['127.0.0.3 app.test', '127.0.0.4 app.test']);
  const [added, removed] = await changed;
  assert.deepEqual(
    added.map((h) => h.address),
    [`127.0.0.4:${port}`],
  );
  assert.deepEqual(removed, [leaving]);
  assert.equal(leaving.draining, true);
  assert.deepEqual(addrs(pool), [`127.0.0.2:${port} (draining)`, `127.0.0.3:${port}`, `127.0.0.4:${port}`]);
  assert.deepEqual(await traffic(pool, 10), { '127.0.0.3': 5, '127.0.0.4': 5 }, 'no new requests to the draining host');
  // Its in-flight request finishes: it leaves the pool.
  const drained = waitFor<Host>(pool, 'drained');
  leaving.release();
  assert.deepEqual(await drained, [leaving]);
  assert.deepEqual(addrs(pool), [`127.0.0.3:${port}`, `127.0.0.4:${port}`]);

  // A removed record with nothing in flight leaves at once; an IPv6 record is a host too.
  const again = waitFor<Host[]>(pool, 'hosts');
  await dns.setHosts(['127.0.0.4 app.test', '::1 app.test']);
  const [added2, removed2] = await again;
  assert.deepEqual(
    added2.map((h) => h.address),
    [`[::1]:${port}`],
  );
  assert.deepEqual(
    removed2.map((h) => h.address),
    [`127.0.0.3:${port}`],
  );
  assert.deepEqual(addrs(pool), [`127.0.0.4:${port}`, `[::1]:${port}`]);
  assert.match(dns.proc.output(), /query\[AAAA\] app\.test/);
  assert.ok(logger.lines.some((l) => l.msg === 'DNS records changed'));
});

test('a name that stops resolving keeps its last known records; resolution resumes when DNS is back', { timeout: 60_000 }, async (t) => {
  const port = await freePort('127.0.0.2');
  const stopBackends = await backends(['127.0.0.2', '127.0.0.3'], port);
  t.after(stopBackends);
  const dns = await startDnsmasq(['127.0.0.2 app.test']);
  t.after(() => dns.stop());
  const logger = recordingLogger();
  const pool = new UpstreamPool(
    upstreamConfig({
      servers: [{ address: `app.test:${port}`, resolve: true }],
      resolve_interval_ms: 100,
      resolver: { servers: [dns.server], timeout_ms: 500 },
    }),
    { logger },
  );
  t.after(() => pool.stop());
  await pool.start();
  assert.deepEqual(addrs(pool), [`127.0.0.2:${port}`]);

  // NXDOMAIN: the name is gone from the hosts file.
  await dns.setHosts(['127.0.0.9 other.test']);
  await waitFor(pool, 'resolved');
  await waitFor(pool, 'resolved');
  assert.deepEqual(addrs(pool), [`127.0.0.2:${port}`], 'last known records kept');
  const warn = logger.lines.find((l) => l.level === 'warn');
  assert.ok(warn, 'a warning was logged');
  assert.equal(warn.msg, 'DNS resolution failed; keeping the last known records');
  assert.equal(warn.obj.err, 'ENOTFOUND');
  assert.deepEqual(await traffic(pool, 3), { '127.0.0.2': 3 });

  // Back, with a new record.
  await dns.setHosts(['127.0.0.2 app.test', '127.0.0.3 app.test']);
  await until(() => pool.hosts.length === 2, 'the new record');
  assert.deepEqual(await traffic(pool, 4), { '127.0.0.2': 2, '127.0.0.3': 2 });

  // The DNS server itself is gone: timeouts, records kept.
  await dns.stop();
  const before = logger.lines.length;
  await until(() => logger.lines.slice(before).some((l) => l.level === 'warn'), 'a warning about the dead DNS server');
  assert.deepEqual(addrs(pool), [`127.0.0.2:${port}`, `127.0.0.3:${port}`]);
});

test('reresolve() picks up a change at once, without waiting for resolve_interval', { timeout: 60_000 }, async (t) => {
  const dns = await startDnsmasq(['127.0.0.2 app.test']);
  t.after(() => dns.stop());
  const pool = new UpstreamPool(
    upstreamConfig({
      servers: [{ address: 'app.test:9000', resolve: true }, { address: '127.0.0.1:9001' }],
      resolve_interval_ms: 3_600_000,
      resolver: { servers: [dns.server], timeout_ms: 1000 },
    }),
    { logger: recordingLogger() },
  );
  t.after(() => pool.stop());
  await pool.start();
  assert.deepEqual(addrs(pool), ['127.0.0.2:9000', '127.0.0.1:9001']);
  await dns.setHosts(['127.0.0.5 app.test', '127.0.0.6 app.test']);
  // Rate limit: a reresolve right after the first round is deferred by at most a second.
  await new Promise((r) => setTimeout(r, 1100));
  await pool.reresolve();
  assert.deepEqual(addrs(pool), ['127.0.0.5:9000', '127.0.0.6:9000', '127.0.0.1:9001']);
});

test('with no resolver servers configured, the system resolver (getaddrinfo, /etc/hosts) is used', { timeout: 30_000 }, async (t) => {
  const pool = new UpstreamPool(upstreamConfig({ servers: [{ address: 'localhost:9000', resolve: true }] }), { logger: recordingLogger() });
  t.after(() => pool.stop());
  await pool.start();
  assert.ok(pool.hosts.length >= 1, 'localhost resolves');
  for (const h of pool.hosts) assert.match(h.address, /^(127\.0\.0\.1|\[::1\]):9000$/);
});
