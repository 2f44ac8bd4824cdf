// The access line is built by hand for speed (proxy/access-log.ts) but must be
// byte for byte the line pino writes for the same log.info() call, through
// pino's public symbols for the destination and the bound fields: this fails
// loudly if a pino upgrade changes either.
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import pino from 'pino';
import { createProxyLog, logAccess } from '../proxy/access-log.ts';
import type { ProxyExchange } from '../proxy/exchange.ts';
import { captureLines } from './helpers/log-lines.ts';

interface AccessCase {
  method: string;
  url: string;
  hostAddress: string;
  upstreamMs: number;
  errorCode: string | null;
  reqId: unknown;
  status: number;
  bytes: number;
  ms: number;
}

/** What pino itself writes for the access line's fields (the reference). */
function pinoAccess(log: pino.Logger, c: AccessCase): void {
  log.info(
    {
      reqId: c.reqId,
      method: c.method,
      path: c.url,
      status: c.status,
      bytes: c.bytes,
      upstream: c.hostAddress,
      upstream_ms: c.upstreamMs < 0 ? null : Math.round(c.upstreamMs * 100) / 100,
      ms: Math.round(c.ms * 100) / 100,
      ...(c.errorCode !== null ? { error: c.errorCode } : {}),
    },
    'access',
  );
}

const cases: AccessCase[] = [
  { method: 'GET', url: '/hello?x=1', hostAddress: 'unix:/run/app.sock', upstreamMs: 1.234567, errorCode: null, reqId: 'abc-123', status: 200, bytes: 180, ms: 2.5 },
  { method: 'POST', url: '/a "quoted" \\ path\u0001\u00e9\u2028', hostAddress: '', upstreamMs: -1, errorCode: 'GW_UPSTREAM_TIMEOUT', reqId: ['a', 'b'], status: 504, bytes: 0, ms: 60000.123 },
  { method: 'HEAD', url: '/', hostAddress: '127.0.0.1:9000', upstreamMs: 0, errorCode: 'GW_CLIENT_ABORTED', reqId: 7, status: 499, bytes: 17, ms: 0 },
];

test('logAccess writes exactly the line pino writes for the same fields (root logger and a child)', () => {
  for (const c of cases) {
    for (const child of [false, true]) {
      const mine = captureLines();
      const theirs = captureLines();
      const base = { name: 'gatewire-proxy', pid: 4242 };
      let a = pino({ level: 'info', base }, mine.stream);
      let b = pino({ level: 'info', base }, theirs.stream);
      if (child) {
        a = a.child({ worker: 2, zone: 'a"b' });
        b = b.child({ worker: 2, zone: 'a"b' });
      }
      const ex = { method: c.method, url: c.url, hostAddress: c.hostAddress, upstreamMs: c.upstreamMs, errorCode: c.errorCode } as unknown as ProxyExchange;
      logAccess(a, ex, c.status, c.reqId, c.bytes, c.ms);
      pinoAccess(b, c);
      assert.equal(mine.lines.length, 1);
      const untimed = (s: string) => s.replace(/"time":\d+/, '"time":0');
      assert.equal(untimed(mine.lines[0]), untimed(theirs.lines[0]));
      assert.ok(JSON.parse(mine.lines[0]).time > 0);
    }
  }
});

test('no access line below the info level', () => {
  const out = captureLines();
  const log = pino({ level: 'warn' }, out.stream);
  logAccess(log, { method: 'GET', url: '/', hostAddress: '', upstreamMs: -1, errorCode: null } as unknown as ProxyExchange, 200, 'x', 1, 1);
  assert.equal(out.lines.length, 0);
});

test('the proxy log writes access lines into its batch byte for byte as pino would (numbers, escapes, UTF-8)', (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'gw-access-batch-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const fd = openSync(path.join(dir, 'log'), 'w');
  const { log, flushSync } = createProxyLog('info', 3_600_000, fd);
  const theirs = captureLines();
  const ref = pino({ level: 'info', base: { name: 'gatewire-proxy', pid: process.pid } }, theirs.stream);
  const all = [
    ...cases.filter((c) => typeof c.reqId === 'string'),
    { method: 'GET', url: '/caf\u00e9/\u{1f600}?q="x"', hostAddress: '10.0.0.1:80', upstreamMs: 0.004, errorCode: null, reqId: 'r\u00e9q', status: 200, bytes: 9_007_199_254_740_991, ms: 0.005 },
    { method: 'PATCH', url: '/a\\b', hostAddress: 'unix:/x', upstreamMs: 1e16, errorCode: 'GW_X', reqId: '', status: 502, bytes: 0, ms: 99.995 },
  ];
  // hundredths of every shape: integers, one and two decimals, values that round up to the next unit
  for (let i = 0; i < 3000; i++) {
    const ms = i < 1000 ? i / 100 : i < 2000 ? Math.random() * 10 ** ((i % 9) - 2) : (i - 2000) * 12.345 + 0.005;
    all.push({ method: 'GET', url: `/n/${i}`, hostAddress: '127.0.0.1:1', upstreamMs: ms / 2, errorCode: null, reqId: `id-${i}`, status: 200, bytes: i * 7919, ms });
  }
  for (const c of all) {
    const ex = { method: c.method, url: c.url, hostAddress: c.hostAddress, upstreamMs: c.upstreamMs, errorCode: c.errorCode } as unknown as ProxyExchange;
    logAccess(log, ex, c.status, c.reqId, c.bytes, c.ms);
    pinoAccess(ref, c);
  }
  flushSync();
  closeSync(fd);
  const untimed = (s: string) => s.replace(/"time":\d+/, '"time":0');
  const mine = readFileSync(path.join(dir, 'log'), 'utf8').split('\n').filter(Boolean);
  assert.equal(mine.length, all.length);
  for (let i = 0; i < all.length; i++) assert.equal(untimed(mine[i]), untimed(theirs.lines[i]).replace(/\n$/, ''), `line ${i}`);
  assert.ok(JSON.parse(mine[0]).time > 1.7e12);
});
