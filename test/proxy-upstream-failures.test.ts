// What clients see when upstreams fail, with real processes: a backend killed
// mid-request (502 before the head, a truncated body after it, traffic moves to
// the others), a frozen backend (SIGSTOP: 504 after the read timeout, marked
// down), nothing available (503), and the request limits (413 by length and
// mid-stream for chunked bodies, 431 when the headers do not fit the vars).
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import { test } from 'node:test';
import { freePort } from './helpers/net.ts';
import { adminStatus, call, countBy, startAppserver, startProxy } from './helpers/proxy-harness.ts';

const SHORT_BODIES: Record<number, string> = { 413: '413 Content Too Large\n', 431: '431 Request Header Fields Too Large\n', 502: '502 Bad Gateway\n', 503: '503 Service Unavailable\n', 504: '504 Gateway Timeout\n' };

test('a killed backend: in-flight requests get 502, later ones go to the survivor', { timeout: 90000 }, async (t) => {
  const [a, b] = await Promise.all([startAppserver(t, 'A'), startAppserver(t, 'B')]);
  const proxy = await startProxy(t, { upstreams: { app: { servers: [a.address, b.address], max_fails: 1, fail_timeout: '30s' } } });
  // POSTs are never retried, so each in-flight one reports what happened to its server
  const inflight = Array.from({ length: 4 }, () => call(`${proxy.url}/slow?ms=4000`, { method: 'POST', body: 'x' }));
  await new Promise((r) => setTimeout(r, 1000));
  a.proc.kill('SIGKILL');
  const answers = await Promise.all(inflight);
  const statuses = countBy(answers.map((r) => r.status));
  assert.deepEqual([statuses.get(502), statuses.get(200)], [2, 2], JSON.stringify(answers.map((r) => [r.status, r.text])));
  for (const r of answers) if (r.status === 502) assert.equal(r.text, SHORT_BODIES[502], 'a short body without internals');
  assert.deepEqual([...new Set(answers.filter((r) => r.status === 200).map((r) => r.text))], ['B']);
  const after: string[] = [];
  for (let i = 0; i < 10; i++) {
    const r = await call(`${proxy.url}/who`);
    assert.equal(r.status, 200, r.text);
    after.push(r.json().name as string);
  }
  assert.deepEqual([...new Set(after)], ['B']);
});

test('a backend killed after the response head: the client sees a truncated body', { timeout: 60000 }, async (t) => {
  const a = await startAppserver(t, 'A');
  const proxy = await startProxy(t, { upstreams: { app: { servers: [a.address] } } });
  const req = http.get(`${proxy.url}/head-then-hang`);
  const [res] = (await once(req, 'response')) as [http.IncomingMessage];
  assert.equal(res.statusCode, 200);
  let got = '';
  res.setEncoding('utf8');
  res.on('data', (d: string) => {
    got += d;
  });
  await new Promise((r) => setTimeout(r, 300));
  a.proc.kill('SIGKILL');
  const outcome = await new Promise<string>((resolve) => {
    res.once('end', () => resolve('end'));
    res.once('error', () => resolve('error'));
    res.once('aborted', () => resolve('aborted'));
    res.once('close', () => resolve(res.complete ? 'end' : 'aborted'));
  });
  assert.equal(got, 'first chunk\n');
  assert.notEqual(outcome, 'end', 'a truncated response must not look complete');
});

test('a frozen backend (SIGSTOP): 504 after the read timeout, then marked down', { timeout: 90000 }, async (t) => {
  const [a, b] = await Promise.all([startAppserver(t, 'A'), startAppserver(t, 'B')]);
  t.after(() => a.proc.kill('SIGCONT'));
  const proxy = await startProxy(t, {
    upstreams: { app: { servers: [a.address, b.address], timeouts: { read: '1500ms' }, max_fails: 1, fail_timeout: '60s' } },
  });
  // warm both: round robin alternates A, B
  for (let i = 0; i < 2; i++) assert.equal((await call(`${proxy.url}/w`)).status, 200);
  a.proc.kill('SIGSTOP');
  const started = Date.now();
  const answers = await Promise.all([call(`${proxy.url}/x`), call(`${proxy.url}/y`)]);
  const statuses = answers.map((r) => r.status).sort();
  assert.deepEqual(statuses, [200, 504], JSON.stringify(answers.map((r) => [r.status, r.text])));
  const timedOut = answers.find((r) => r.status === 504);
  assert.equal(timedOut?.text, SHORT_BODIES[504]);
  const elapsed = Date.now() - started;
  assert.ok(elapsed >= 1400 && elapsed < 15000, `504 after ${elapsed} ms`);
  const status = await adminStatus(proxy);
  const hostA = status.upstreams[0].hosts.find((h) => h.address === a.address);
  assert.equal(hostA?.down, true, JSON.stringify(hostA));
  for (let i = 0; i < 6; i++) {
    const r = await call(`${proxy.url}/after`);
    assert.equal(r.status, 200);
    assert.equal(r.json().name, 'B');
  }
});

test('502 for a refused connection, 503 once no server is available; a single server is never taken out', { timeout: 60000 }, async (t) => {
  const [p1, p2] = [await freePort(), await freePort()];
  const proxy = await startProxy(t, {
    upstreams: {
      app: { servers: [`127.0.0.1:${p1}`, `127.0.0.1:${p2}`], max_fails: 1, fail_timeout: '60s' },
      solo: { servers: [`127.0.0.1:${p1}`], max_fails: 1, fail_timeout: '60s' },
    },
    routes: [
      { match: { path_prefix: '/solo' }, upstream: 'solo' },
      { match: { path_prefix: '/' }, upstream: 'app' },
    ],
  });
  // both servers refuse: each is tried once (never processed, so retried whatever retries.tries says)
  const first = await call(`${proxy.url}/`);
  assert.deepEqual([first.status, first.text], [502, SHORT_BODIES[502]]);
  const second = await call(`${proxy.url}/`);
  assert.deepEqual([second.status, second.text], [503, SHORT_BODIES[503]]);
  // NGINX: max_fails and fail_timeout are ignored for a group with a single server
  for (let i = 0; i < 3; i++) {
    const solo = await call(`${proxy.url}/solo`);
    assert.deepEqual([solo.status, solo.text], [502, SHORT_BODIES[502]]);
  }
});

test('413 for a body over max_body, by Content-Length and mid-stream when chunked', { timeout: 60000 }, async (t) => {
  const a = await startAppserver(t, 'A');
  const proxy = await startProxy(t, { upstreams: { app: { servers: [a.address], max_body: '64k' } } });
  const ok = await call(`${proxy.url}/up`, { method: 'POST', body: Buffer.alloc(60_000) });
  assert.equal(ok.status, 200);
  const tooLong = await call(`${proxy.url}/up`, { method: 'POST', body: Buffer.alloc(70_000) });
  assert.deepEqual([tooLong.status, tooLong.text], [413, SHORT_BODIES[413]]);
  const chunks = async function* () {
    for (let i = 0; i < 10; i++) {
      yield Buffer.alloc(10_000, i);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const chunked = await call(`${proxy.url}/up`, { method: 'POST', body: chunks() });
  assert.deepEqual([chunked.status, chunked.text], [413, SHORT_BODIES[413]], 'the proxy answers 413 once the body grew past the limit');
  const chunkedOk = async function* () {
    for (let i = 0; i < 3; i++) yield Buffer.alloc(10_000, i);
  };
  const under = await call(`${proxy.url}/up`, { method: 'POST', body: chunkedOk() });
  assert.deepEqual([under.status, under.json().bodyLen], [200, 30_000]);
});

test('431 when the request headers do not fit the gatewire/uwsgi vars block', { timeout: 60000 }, async (t) => {
  const a = await startAppserver(t, 'A');
  const proxy = await startProxy(t, {
    limits: { max_header_size: '256k' },
    routes: [
      { match: { path_prefix: '/' }, upstream: 'native' },
      { match: { path_prefix: '/classic' }, upstream: 'classic' },
    ],
    upstreams: { native: { protocol: 'gatewire', servers: [a.address] }, classic: { protocol: 'uwsgi', servers: [a.address] } },
  });
  const big = { 'x-big': 'v'.repeat(70_000) };
  for (const path of ['/n', '/classic/c']) {
    const r = await call(`${proxy.url}${path}`, { headers: big });
    assert.deepEqual([r.status, r.text], [431, SHORT_BODIES[431]], path);
    const fine = await call(`${proxy.url}${path}`, { headers: { 'x-big': 'v'.repeat(30_000) } });
    assert.equal(fine.status, 200, path);
  }
});
