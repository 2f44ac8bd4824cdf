// `gatewire proxy` with workers: 2, as real processes. Both workers accept on
// the one socket (per-worker counters in /status); a worker SIGKILLed under
// load is respawned and no request on the other worker fails; SIGHUP under
// 4,000+ requests loses none and every worker runs the new config; an invalid
// config is logged and kept; SIGTERM under load lets in-flight requests finish
// and exits 0; /metrics' request total is exactly what was sent.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import http from 'node:http';
import { writeFileSync } from 'node:fs';
import { type TestContext, test } from 'node:test';
import { call, startAppserver, startProxy } from './helpers/proxy-harness.ts';

interface GroupStatus {
  workers: Array<{ pid: number; slot: number; state: string; requests: number; inflight: number; rss: number; restarts: number }>;
  totals: { requests: number; restarts: number };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function status(admin: string): Promise<GroupStatus> {
  return (await call(`${admin}/status`)).json<GroupStatus>();
}

async function eventually<T>(fn: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch((err) => err as T);
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms (last: ${JSON.stringify(v)})`);
    await sleep(100);
  }
}

/** gatewire_http_requests_total summed over every label set. */
async function requestsTotal(admin: string): Promise<number> {
  const text = (await call(`${admin}/metrics`)).text;
  let n = 0;
  for (const line of text.split('\n')) if (line.startsWith('gatewire_http_requests_total{')) n += Number(line.slice(line.lastIndexOf(' ') + 1));
  return n;
}

interface Outcome {
  ok: boolean;
  body: string;
  detail: string;
  /** The client's local port (identifies the connection). */
  localPort: number;
}

/** One GET on `agent` (keep-alive, one socket: a lane) or on a new connection (agent false). */
function get(port: number, path: string, agent: http.Agent | false): Promise<Outcome> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent, headers: agent === false ? { connection: 'close' } : {} }, (res) => {
      const localPort = res.socket.localPort ?? 0;
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
      });
      res.on('end', () => resolve({ ok: res.statusCode === 200, body, detail: `status ${res.statusCode}`, localPort }));
      res.on('error', (err) => resolve({ ok: false, body, detail: err.message, localPort }));
    });
    req.on('error', (err) => resolve({ ok: false, body: '', detail: (err as NodeJS.ErrnoException).code ?? err.message, localPort: req.socket?.localPort ?? 0 }));
    req.setTimeout(30_000, () => req.destroy(new Error('client timeout')));
  });
}

/** Lanes, each one keep-alive connection sending requests back to back until stop() (also called when the test ends). */
function lanes(t: TestContext, port: number, path: string, n: number) {
  let running = true;
  const results: Array<Outcome & { lane: number; at: number }> = [];
  const agents: http.Agent[] = [];
  const loops: Promise<void>[] = [];
  const add = (count: number) => {
    for (let i = 0; i < count; i++) {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      const lane = agents.push(agent) - 1;
      loops.push(
        (async () => {
          while (running) {
            const o = await get(port, path, agent);
            results.push({ ...o, lane, at: Date.now() });
            if (!o.ok) await sleep(10);
          }
        })(),
      );
    }
  };
  add(n);
  const stop = async () => {
    running = false;
    await Promise.all(loops);
    for (const a of agents) a.destroy();
    return results;
  };
  t.after(stop);
  return { results, add, stop };
}

/** The pid of the process that owns the server side of the connection from client port `localPort`. */
function ownerOf(proxyPort: number, localPort: number): number | null {
  const out = execFileSync('ss', ['-tnpH', 'state', 'established', `( sport = :${proxyPort} and dport = :${localPort} )`], { encoding: 'utf8' });
  const m = /pid=(\d+)/.exec(out);
  return m ? Number(m[1]) : null;
}

async function startGroup(t: TestContext, workers = 2) {
  const [a, b] = await Promise.all([startAppserver(t, 'A'), startAppserver(t, 'B')]);
  const proxy = await startProxy(t, { workers, log: { level: 'info', access: false }, upstreams: { app: { servers: [a.address] } } });
  // workers log their own "listening on" lines; the master's comes once all of them accept
  await proxy.proc.waitFor(new RegExp(`gatewire proxy listening on .* \\(${workers} workers\\)`), 30_000);
  return { a, b, proxy, admin: proxy.admin as string };
}

test('2 workers both take connections; /metrics counts exactly the requests sent', { timeout: 90_000 }, async (t) => {
  const { proxy, admin } = await startGroup(t);
  const before = await status(admin);
  assert.equal(before.workers.length, 2);
  assert.ok(before.workers.every((w) => w.state === 'ready' && w.pid > 0 && w.rss > 1024 * 1024));
  // a new connection per request, 8 at a time: the kernel hands them to whichever worker accepts first
  let sent = 0;
  let failed = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      for (let i = 0; i < 100; i++) {
        sent++;
        if (!(await get(proxy.port, '/', false)).ok) failed++;
      }
    }),
  );
  assert.equal(failed, 0);
  const s = await eventually(
    () => status(admin),
    (v) => v.totals?.requests === sent,
  );
  for (const w of s.workers) assert.ok(w.requests > 0, `worker ${w.pid} took no request: ${JSON.stringify(s.workers)}`);
  assert.equal(
    s.workers.reduce((n, w) => n + w.requests, 0),
    sent,
  );
  assert.equal(await requestsTotal(admin), sent);
  const metrics = (await call(`${admin}/metrics`)).text;
  for (const slot of [0, 1]) assert.match(metrics, new RegExp(`process_resident_memory_bytes\\{worker="${slot}"\\} \\d+`));
});

test('a worker SIGKILLed under load is respawned and no request on the other worker fails', { timeout: 90_000 }, async (t) => {
  const { proxy, admin } = await startGroup(t);
  const pids = (await status(admin)).workers.map((w) => w.pid);
  const load = lanes(t, proxy.port, '/slow?ms=5', 8);
  // which worker holds each lane's connection; more lanes until both workers hold some (the kernel
  // gives a new connection to whichever worker wakes first: on a busy machine, often the same one)
  const laneOwner = new Map<number, number | null>();
  for (let attempt = 0; attempt < 20; attempt++) {
    await sleep(300);
    const lastPort = new Map<number, number>();
    for (const r of load.results) lastPort.set(r.lane, r.localPort);
    for (const [lane, port] of lastPort) laneOwner.set(lane, ownerOf(proxy.port, port));
    if (pids.every((pid) => [...laneOwner.values()].includes(pid))) break;
    load.add(4);
  }
  // the victim is a worker holding lanes, the survivor the other
  const victim = pids.find((pid) => [...laneOwner.values()].includes(pid)) as number;
  const survivor = pids.find((pid) => pid !== victim) as number;
  const onSurvivor = [...laneOwner].filter(([, pid]) => pid === survivor).map(([lane]) => lane);
  assert.ok(onSurvivor.length > 0, `no lane on the surviving worker after adding lanes: ${JSON.stringify([...laneOwner])}`);
  const killedAt = Date.now();
  process.kill(victim, 'SIGKILL');
  const after = await eventually(
    () => status(admin),
    (s) => s.workers?.length === 2 && s.workers.every((w) => w.state === 'ready') && !s.workers.some((w) => w.pid === victim),
  );
  await sleep(800);
  const results = await load.stop();
  assert.equal(after.totals.restarts, 1);
  assert.ok(after.workers.some((w) => w.pid === survivor), 'the other worker kept running');
  const survivorFailures = results.filter((r) => onSurvivor.includes(r.lane) && !r.ok);
  assert.deepEqual(survivorFailures, [], 'requests on the surviving worker failed');
  // on the killed worker's connections, only the request in flight at the kill may fail
  const failures = results.filter((r) => !r.ok);
  assert.ok(failures.length <= laneOwner.size - onSurvivor.length, `${failures.length} failures: ${JSON.stringify(failures.slice(0, 5))}`);
  assert.ok(
    failures.every((f) => f.at >= killedAt),
    'nothing failed before the kill',
  );
  t.diagnostic(`${results.length} requests, ${onSurvivor.length} of ${laneOwner.size} lanes on the survivor, ${failures.length} failed on the killed worker`);
  const late = results.filter((r) => r.at > killedAt + 500);
  assert.ok(late.length > 50 && late.every((r) => r.ok), 'every request after the respawn succeeded');
  assert.match(proxy.proc.output(), /worker died: respawning/);
});

test('SIGHUP under 4,000+ requests loses none and every worker runs the new config; an invalid config is kept out', { timeout: 120_000 }, async (t) => {
  const { b, proxy, admin } = await startGroup(t);
  const keepAlive = lanes(t, proxy.port, '/', 8);
  let fresh = 0;
  let freshFailed: string[] = [];
  let stop = false;
  const newConnections = Array.from({ length: 2 }, async () => {
    while (!stop) {
      const o = await get(proxy.port, '/', false);
      fresh++;
      if (!o.ok) freshFailed.push(o.detail);
    }
  });
  t.after(() => {
    stop = true;
    return Promise.all(newConnections);
  });
  await sleep(500);
  proxy.rewrite({ workers: 2, log: { level: 'info', access: false }, upstreams: { app: { servers: [b.address] } } });
  proxy.proc.kill('SIGHUP');
  await proxy.proc.waitFor(/configuration reloaded \(new: app\)/, 15_000);
  const reloadedAt = Date.now();
  await eventually(
    async () => proxy.proc.output().split('"msg":"configuration reloaded"').length - 1,
    (n) => n >= 2,
  );
  await sleep(1000);
  writeFileSync(proxy.configFile, '{ "listen": { "port": "not a port" }, ');
  proxy.proc.kill('SIGHUP');
  await proxy.proc.waitFor(/reload failed, keeping the running configuration/, 15_000);
  // keep going until well past 4,000 requests
  await eventually(
    async () => keepAlive.results.length + fresh,
    (n) => n >= 4500,
    60_000,
  );
  stop = true;
  await Promise.all(newConnections);
  const results = await keepAlive.stop();
  const failed = results.filter((r) => !r.ok);
  assert.deepEqual(failed.slice(0, 5), [], `${failed.length} of ${results.length} keep-alive requests failed`);
  assert.deepEqual(freshFailed.slice(0, 5), [], `${freshFailed.length} of ${fresh} new-connection requests failed`);
  freshFailed = [];
  assert.ok(results.length + fresh >= 4000, `only ${results.length + fresh} requests`);
  t.diagnostic(`${results.length} keep-alive and ${fresh} new-connection requests, none failed`);
  const afterReload = results.filter((r) => r.at > reloadedAt + 300);
  assert.ok(afterReload.length > 100);
  assert.deepEqual([...new Set(afterReload.map((r) => JSON.parse(r.body).name))], ['B'], 'every worker forwards to the new upstream');
  assert.match(proxy.proc.output(), /gatewire\.json/, 'the failed reload names the file');
  // the invalid file was validated once, by the master: no worker saw it
  assert.equal((await status(admin)).totals.restarts, 0);
});

test('SIGTERM under load: every worker finishes its in-flight requests and the group exits 0', { timeout: 90_000 }, async (t) => {
  const { proxy } = await startGroup(t);
  const load = lanes(t, proxy.port, '/', 4);
  const slow = Array.from({ length: 12 }, () => get(proxy.port, '/slow?ms=1500', false));
  await sleep(600);
  proxy.proc.kill('SIGTERM');
  const outcomes = await Promise.all(slow);
  for (const o of outcomes) {
    assert.equal(o.ok, true, o.detail);
    assert.equal(o.body, 'A');
  }
  assert.equal(await proxy.proc.exited, 0);
  const results = await load.stop();
  t.diagnostic(`${outcomes.length} in-flight requests finished; ${results.length} keep-alive requests around the stop`);
  // keep-alive requests answered before the stop are whole; after it, the connection is closed, never a 5xx
  assert.ok(results.every((r) => r.ok || !r.detail.startsWith('status 5')), JSON.stringify(results.filter((r) => !r.ok).slice(0, 3)));
});

test('workers: in the config takes a number of processes or auto; anything else is an error naming the key and the fix', async () => {
  const { parseConfig, ConfigError } = await import('../proxy/config.ts');
  const base = 'routes: [{ match: { path_prefix: / }, upstream: app }]\nupstreams: { app: { servers: [{ address: "127.0.0.1:9000" }] } }\n';
  assert.equal(parseConfig(base, 'g.yaml').workers, 1);
  assert.equal(parseConfig(`workers: 4\n${base}`, 'g.yaml').workers, 4);
  assert.equal(parseConfig(`workers: auto\n${base}`, 'g.yaml').workers, 'auto');
  for (const [value, message] of [
    ['0', /g\.yaml:1:10: workers: must be at least 1, got 0/],
    ['all', /g\.yaml:1:10: workers: expected a number of worker processes \(1 or more\) or "auto" \(one per core\), got "all"/],
    ['1.5', /g\.yaml:1:10: workers: expected a number of worker processes \(1 or more\) or "auto" \(one per core\), got 1\.5/],
  ] as const) {
    assert.throws(
      () => parseConfig(`workers: ${value}\n${base}`, 'g.yaml'),
      (err: Error) => err instanceof ConfigError && message.test(err.message),
    );
  }
});
