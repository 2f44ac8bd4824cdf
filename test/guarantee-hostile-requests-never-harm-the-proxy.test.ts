// Guarantees against hostile clients at the proxy, over raw sockets (what an
// attacker really sends, not what a well-behaved library would): slowloris is
// cut at the header timeout while others are served; no header is silently
// dropped; an oversized head is a 431; smuggling shapes, obs-fold and CR/LF/NUL
// in values are a 400 that closes the connection (the smuggled request never
// reaches the app); a body over max_body never reaches the app beyond the
// limit; paths reach the app exactly as sent.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  getJson,
  headerOf,
  parseResponses,
  rawRequest,
  rawSession,
  sleep,
  startApp,
  startGuardedProxy,
  untilResponses,
} from './helpers/guarantee-stack.ts';

interface Debug {
  requests: number;
  maxUpload: number;
  uploadAborts: number;
}

test('slowloris: a client dribbling its headers is closed at header_timeout, and other clients are served meanwhile', { timeout: 60000 }, async (t) => {
  const a = await startApp(t, 'A');
  const proxy = await startGuardedProxy(t, { upstreams: { app: { servers: [a.address] } }, limits: { header_timeout: '2s' } });
  const started = Date.now();
  // 20 attackers: one header line every 300 ms, for up to 30 s unless cut
  const attackers = Array.from({ length: 20 }, () =>
    rawSession(
      proxy.port,
      async (sock) => {
        sock.write('GET /hello HTTP/1.1\r\nHost: x\r\n');
        for (let i = 0; i < 100 && !sock.destroyed; i++) {
          await sleep(300);
          if (!sock.destroyed) sock.write(`X-Drip-${i}: a\r\n`);
        }
      },
      { timeoutMs: 10000 },
    ),
  );
  // honest clients keep being served while the attack goes on
  const honest: number[] = [];
  while (Date.now() - started < 2500) {
    const r = await fetch(`${proxy.url}/hello`, { signal: AbortSignal.timeout(5000) });
    assert.equal(await r.text(), 'hello from A');
    honest.push(r.status);
  }
  assert.ok(honest.length >= 5, `${honest.length} honest requests during the attack`);
  const results = await Promise.all(attackers);
  for (const r of results) {
    assert.notEqual(r.ended, 'open', `a dribbling client must be closed near header_timeout (2 s); still open after ${r.ms} ms`);
    assert.ok(r.ms < 8000, `closed after ${r.ms} ms; header_timeout is 2 s`);
    const p = parseResponses(r.data);
    assert.equal(p.malformed, null);
    // either closed silently or told 408 (the short text body of every error); never served
    for (const res of p.responses) {
      assert.equal(res.status, 408);
      assert.equal(res.body.toString(), '408 Request Timeout\n');
    }
  }
  const dbg = await getJson<Debug>(`${proxy.url}/debug`);
  assert.equal(dbg.requests, honest.length, 'no dribbled request reached the app');
});

test('a huge header count: every header reaches the app, or the request gets 431 — never silently dropped', { timeout: 60000 }, async (t) => {
  const a = await startApp(t, 'A');
  const proxy = await startGuardedProxy(t, { upstreams: { app: { servers: [a.address] } }, limits: { max_header_size: '256k' } });
  for (const count of [100, 1500, 5000]) {
    const head = `GET /inspect HTTP/1.1\r\nHost: x\r\n${Array.from({ length: count }, (_, i) => `x-h${i}: v${i}\r\n`).join('')}\r\n`;
    const r = await rawRequest(proxy.port, head, { timeoutMs: 10000, until: untilResponses(1) });
    const p = parseResponses(r.data);
    assert.equal(p.malformed, null);
    const res = p.responses[0];
    assert.ok(res, `no answer to ${count} headers`);
    if (res.status === 431) continue;
    assert.equal(res.status, 200, res.body.toString());
    const seen = Object.keys((JSON.parse(res.body.toString()) as { headers: Record<string, string> }).headers).filter((k) => k.startsWith('x-h'));
    assert.equal(seen.length, count, `${count} headers sent, the app saw ${seen.length}`);
  }
  // 20,000 headers do not fit 256k: 431
  const huge = `GET /inspect HTTP/1.1\r\nHost: x\r\n${'x-h: v\r\n'.repeat(40000)}\r\n`;
  const r = await rawRequest(proxy.port, huge, { timeoutMs: 10000, until: untilResponses(1) });
  assert.equal(parseResponses(r.data).responses[0]?.status, 431);
  assert.equal((await fetch(`${proxy.url}/hello`)).status, 200, 'the proxy keeps serving');
});

test('a request head over max_header_size gets 431, and the proxy keeps serving', { timeout: 60000 }, async (t) => {
  const a = await startApp(t, 'A');
  const proxy = await startGuardedProxy(t, { upstreams: { app: { servers: [a.address] } }, limits: { max_header_size: '16k' } });
  for (const head of [`GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: ${'v'.repeat(20000)}\r\n\r\n`, `GET /${'p'.repeat(20000)} HTTP/1.1\r\nHost: x\r\n\r\n`]) {
    const r = await rawRequest(proxy.port, head, { timeoutMs: 10000 });
    const p = parseResponses(r.data);
    assert.equal(p.malformed, null);
    assert.equal(p.responses[0]?.status, 431, r.data.toString().slice(0, 200));
    assert.equal(p.responses[0]?.body.toString(), '431 Request Header Fields Too Large\n', 'the short text body, not JSON');
    assert.notEqual(r.ended, 'open', 'the connection is closed after a 431');
  }
  const ok = await rawRequest(proxy.port, `GET /hello HTTP/1.1\r\nHost: x\r\nX-Fits: ${'v'.repeat(8000)}\r\n\r\n`, { until: untilResponses(1) });
  assert.equal(parseResponses(ok.data).responses[0]?.body.toString(), 'hello from A');
});

// Each of these is followed, in the same bytes, by a second request that a
// desynchronised parser would take for a new one: it must never reach the app.
const SMUGGLED = 'GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n';
const REJECTED: Record<string, string> = {
  'Content-Length with Transfer-Encoding': `POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`,
  'Transfer-Encoding with Content-Length (reversed)': `POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n${SMUGGLED}`,
  'two differing Content-Lengths': `POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: ${SMUGGLED.length}\r\n\r\n${SMUGGLED}`,
  'Transfer-Encoding not ending in chunked': `POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n${SMUGGLED}`,
  'obs-fold (a header continued on the next line)': `GET /hello HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n  b\r\n\r\n${SMUGGLED}`,
  'obs-fold of Transfer-Encoding': `POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n${SMUGGLED}`,
  'a space before the colon': `POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n${SMUGGLED}`,
  'a bare CR inside a header value': `GET /hello HTTP/1.1\r\nHost: x\r\nX-Evil: a\rInjected: b\r\n\r\n${SMUGGLED}`,
  'a bare LF inside a header value': `GET /hello HTTP/1.1\r\nHost: x\r\nX-Evil: a\nInjected: b\r\n\r\n${SMUGGLED}`,
  'a NUL inside a header value': `GET /hello HTTP/1.1\r\nHost: x\r\nX-Evil: a\0b\r\n\r\n${SMUGGLED}`,
  'a CR/LF in the request target': `GET /hello\rX HTTP/1.1\r\nHost: x\r\n\r\n${SMUGGLED}`,
};

test('request smuggling shapes, obs-fold and CR/LF/NUL in header values get 400 and a closed connection; the smuggled request never reaches the app', { timeout: 60000 }, async (t) => {
  const a = await startApp(t, 'A');
  const proxy = await startGuardedProxy(t, { upstreams: { app: { servers: [a.address] } } });
  const before = await getJson<Debug>(`${proxy.url}/debug`);
  for (const [name, bytes] of Object.entries(REJECTED)) {
    const r = await rawRequest(proxy.port, bytes, { timeoutMs: 10000 });
    const p = parseResponses(r.data);
    assert.equal(p.malformed, null, name);
    assert.deepEqual(
      p.responses.map((x) => x.status),
      [400],
      `${name}: one 400 and nothing else; got ${JSON.stringify(r.data.toString('latin1').slice(0, 300))}`,
    );
    assert.notEqual(r.ended, 'open', `${name}: the connection is closed after the 400`);
  }
  const after = await getJson<Debug>(`${proxy.url}/debug`);
  assert.equal(after.requests, before.requests, 'none of these requests, and no smuggled one, reached the app');
});

test('a body over max_body: 413 by Content-Length before the app sees a byte; a chunked body growing past it gets 413 or a reset, and the app never sees more than the limit', { timeout: 60000 }, async (t) => {
  const a = await startApp(t, 'A');
  const limit = 64 * 1024;
  const proxy = await startGuardedProxy(t, { upstreams: { app: { servers: [a.address], max_body: '64k' } } });
  const declared = await rawRequest(proxy.port, `POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: ${limit + 1}\r\n\r\n${'a'.repeat(1000)}`, {
    timeoutMs: 10000,
  });
  assert.equal(parseResponses(declared.data).responses[0]?.status, 413);
  let dbg = await getJson<Debug>(`${proxy.url}/debug`);
  assert.equal(dbg.maxUpload, 0, 'a body declared too large never reaches the app');

  // 10 KiB chunks, 40 of them (400 KiB), slowly enough that the app reads along
  for (let round = 0; round < 3; round++) {
    const r = await rawSession(
      proxy.port,
      async (sock) => {
        sock.write('POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n');
        for (let i = 0; i < 40 && !sock.destroyed; i++) {
          sock.write(`2800\r\n${'b'.repeat(0x2800)}\r\n`);
          await sleep(10);
        }
        if (!sock.destroyed) sock.write('0\r\n\r\n');
      },
      { timeoutMs: 15000 },
    );
    const p = parseResponses(r.data);
    assert.equal(p.malformed, null);
    const statuses = p.responses.map((x) => x.status);
    assert.ok((statuses.length === 0 && r.ended !== 'open') || (statuses.length === 1 && statuses[0] === 413), `413 or a reset; got ${statuses} (${r.ended})`);
    if (statuses[0] === 413) assert.equal(headerOf(p.responses[0], 'connection'), 'close');
  }
  dbg = await getJson<Debug>(`${proxy.url}/debug`);
  assert.ok(dbg.maxUpload <= limit, `the app saw ${dbg.maxUpload} bytes of a body; max_body is ${limit}`);
  assert.ok(dbg.maxUpload > 0, 'the chunked body did stream to the app up to the limit');
  const ok = await fetch(`${proxy.url}/upload`, { method: 'POST', body: 'x'.repeat(limit) });
  assert.deepEqual(await ok.json(), { bytes: limit }, 'a body of exactly max_body passes');
});

// What a client sends as the request target, byte for byte.
const PATHS = [
  '/a/./b/../c',
  '/a/b/..',
  '/a/%2e%2e/b',
  '/a/%2E%2e%2Fb',
  '//double//slashes///',
  '/a%2fb',
  '/a\\..\\b',
  '/public\\..\\admin',
  '/../etc/passwd',
  '/%2e%2e/%2e%2e/etc/passwd',
  '/a/b/../../../x',
  '/;/x;y=1',
  '/caf%C3%A9/%E2%82%AC?q=%2e%2e&x=/../y',
  '/a?b=../c&d=%00',
  "/~user/!$&'()*+,;=:@",
  '/x/.%2e/y',
  '/..\\windows\\win.ini',
  '/static/..%2f..%2fetc/passwd',
];

// Paths that climb above the root are the one exception: refused with 400 as NGINX does (no client
// means them; they aim at apps that join the path to a directory) — refused, never rewritten.
const ABOVE_ROOT = new Set(['/../etc/passwd', '/%2e%2e/%2e%2e/etc/passwd', '/a/b/../../../x', '/..\\windows\\win.ini', '/static/..%2f..%2fetc/passwd']);

test('non-normalised paths and path traversal reach the app exactly as sent (REQUEST_URI byte for byte); above-root traversal is a 400', { timeout: 60000 }, async (t) => {
  const a = await startApp(t, 'A');
  const proxy = await startGuardedProxy(t, { upstreams: { app: { servers: [a.address] } } });
  const before = await getJson<Debug>(`${proxy.url}/debug`);
  const wrong: string[] = [];
  for (const target of PATHS) {
    const sep = target.includes('?') ? '&' : '?';
    const sent = `${target}${sep}inspect=1`;
    const r = await rawRequest(proxy.port, `GET ${sent} HTTP/1.1\r\nHost: x\r\n\r\n`, { timeoutMs: 10000, until: untilResponses(1) });
    const p = parseResponses(r.data);
    assert.equal(p.malformed, null);
    const res = p.responses[0];
    if (ABOVE_ROOT.has(target)) {
      if (res?.status !== 400 || res.body.toString() !== '400 Bad Request\n') wrong.push(`${sent} → ${res?.status ?? r.ended}, expected 400 (above the root)`);
      continue;
    }
    if (res?.status !== 200) {
      wrong.push(`${sent} → ${res?.status ?? r.ended} ${res?.body.toString().trim() ?? ''}`);
      continue;
    }
    const seen = JSON.parse(res.body.toString()) as { uri: string };
    if (seen.uri !== sent) wrong.push(`${sent} → the app saw ${seen.uri}`);
  }
  assert.deepEqual(wrong, [], `paths rewritten or refused on the way:\n${wrong.join('\n')}`);
  const after = await getJson<Debug>(`${proxy.url}/debug`);
  assert.equal(after.requests - before.requests, PATHS.length - ABOVE_ROOT.size, 'no above-root path reached the app');
});

test('routing sees the raw path the app sees: a route and the app behind it never disagree (strip_prefix on the raw target too)', { timeout: 60000 }, async (t) => {
  const a = await startApp(t, 'A');
  const b = await startApp(t, 'B');
  const proxy = await startGuardedProxy(t, {
    routes: [
      { match: { path_prefix: '/public' }, upstream: 'pub' },
      { match: { path_prefix: '/stripped' }, upstream: 'pub', strip_prefix: true },
      { match: { path_prefix: '/' }, upstream: 'rest' },
    ],
    upstreams: { pub: { servers: [a.address] }, rest: { servers: [b.address] } },
  });
  const cases: Array<[string, string, string]> = [
    // [sent, the app that must answer, the REQUEST_URI it must see]
    // `\` is no segment boundary for a prefix: `/public\..` is not under /public
    ['/public\\..\\admin?inspect=1', 'B', '/public\\..\\admin?inspect=1'],
    ['/public/%2e%2e/admin?inspect=1', 'A', '/public/%2e%2e/admin?inspect=1'],
    ['/public/../admin?inspect=1', 'A', '/public/../admin?inspect=1'],
    ['/admin/../public?inspect=1', 'B', '/admin/../public?inspect=1'],
    ['/stripped/a/../b?x=/../y&inspect=1', 'A', '/a/../b?x=/../y&inspect=1'],
    ['/stripped?inspect=1', 'A', '/?inspect=1'],
  ];
  for (const [sent, name, uri] of cases) {
    const r = await rawRequest(proxy.port, `GET ${sent} HTTP/1.1\r\nHost: x\r\n\r\n`, { timeoutMs: 10000, until: untilResponses(1) });
    const res = parseResponses(r.data).responses[0];
    assert.equal(res?.status, 200, `${sent}: ${r.data.toString('latin1').slice(0, 200)}`);
    const seen = JSON.parse(res.body.toString()) as { name: string; uri: string };
    assert.deepEqual([seen.name, seen.uri], [name, uri], sent);
  }
});
