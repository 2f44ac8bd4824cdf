// The access line is built by hand for speed (proxy/access-log.ts) but must be
// byte for byte the line pino writes for the same log.info() call, through
// pino's public symbols for the destination and the bound fields: this fails
// loudly if a pino upgrade changes either.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import pino from 'pino';
import { logAccess } from '../proxy/access-log.ts';
import type { ProxyExchange } from '../proxy/exchange.ts';

function capture(): { lines: string[]; stream: Writable } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      lines.push(String(chunk));
      cb();
    },
  });
  return { lines, stream };
}

const cases = [
  { method: 'GET', url: '/hello?x=1', hostAddress: 'unix:/run/app.sock', upstreamMs: 1.234567, errorCode: null, reqId: 'abc-123', status: 200, bytes: 180, ms: 2.5 },
  { method: 'POST', url: '/a "quoted" \\ path\u0001\u00e9\u2028', hostAddress: '', upstreamMs: -1, errorCode: 'GW_UPSTREAM_TIMEOUT', reqId: ['a', 'b'], status: 504, bytes: 0, ms: 60000.123 },
  { method: 'HEAD', url: '/', hostAddress: '127.0.0.1:9000', upstreamMs: 0, errorCode: 'GW_CLIENT_ABORTED', reqId: 7, status: 499, bytes: 17, ms: 0 },
];

test('logAccess writes exactly the line pino writes for the same fields (root logger and a child)', () => {
  for (const c of cases) {
    for (const child of [false, true]) {
      const mine = capture();
      const theirs = capture();
      const base = { name: 'gatewire-proxy', pid: 4242 };
      let a = pino({ level: 'info', base }, mine.stream);
      let b = pino({ level: 'info', base }, theirs.stream);
      if (child) {
        a = a.child({ worker: 2, zone: 'a"b' });
        b = b.child({ worker: 2, zone: 'a"b' });
      }
      const ex = { method: c.method, url: c.url, hostAddress: c.hostAddress, upstreamMs: c.upstreamMs, errorCode: c.errorCode } as unknown as ProxyExchange;
      logAccess(a, ex, c.status, c.reqId, c.bytes, c.ms);
      b.info(
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
      assert.equal(mine.lines.length, 1);
      const untimed = (s: string) => s.replace(/"time":\d+/, '"time":0');
      assert.equal(untimed(mine.lines[0]), untimed(theirs.lines[0]));
      assert.ok(JSON.parse(mine.lines[0]).time > 0);
    }
  }
});

test('no access line below the info level', () => {
  const out = capture();
  const log = pino({ level: 'warn' }, out.stream);
  logAccess(log, { method: 'GET', url: '/', hostAddress: '', upstreamMs: -1, errorCode: null } as unknown as ProxyExchange, 200, 'x', 1, 1);
  assert.equal(out.lines.length, 0);
});
