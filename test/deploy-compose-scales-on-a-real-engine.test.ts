// `docker compose up` for real: Debian's dockerd and docker-compose run
// docker-compose.yml (and the Unix-socket variant) from this checkout, built
// on the stand-in base images. From the host, through the port published on
// 127.0.0.1 only: the stack answers, the Flask app mounted under /flask/ builds
// links that include its prefix, requests spread over the 3 replicas, and a
// steady load loses nothing while the appservers scale 3 → 5 → 2 → 3 (new
// replicas get traffic without the proxy being recreated, removed ones are
// drained) or reload; `stop` ends every container with exit 0 and `down -v`
// leaves nothing behind. Every count is printed. The engine is the test's own
// and is removed at the end, pass or fail.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { type TestContext, test } from 'node:test';
import { Agent, request } from 'undici';
import { composeConfig } from './helpers/deploy-compose.ts';
import { ComposeProject, countDeltas, describeLoad, type LoadCounts, startLoad } from './helpers/deploy-compose-engine.ts';
import { buildBaseImages, type Engine, startEngine } from './helpers/deploy-engine.ts';
import { freePort } from './helpers/net.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function report(t: TestContext, line: string): void {
  t.diagnostic(line);
  process.stdout.write(`# ${line}\n`);
}

async function get(url: string, agent: Agent): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  const res = await request(url, { dispatcher: agent, signal: AbortSignal.timeout(20_000) });
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() };
}

/** Waits, bounded, until `check` returns true; fails with `what` and the last detail. */
async function until(what: string, timeoutMs: number, check: () => Promise<boolean | string>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: boolean | string = false;
  while (Date.now() < deadline) {
    last = await check();
    if (last === true) return;
    await sleep(500);
  }
  assert.fail(`${what} within ${timeoutMs / 1000} s${typeof last === 'string' ? `: ${last}` : ''}`);
}

/** The proxy container's id and start time: equal before and after means it was neither recreated nor restarted. */
async function proxyIdentity(p: ComposeProject): Promise<string> {
  const [id] = await p.containers('proxy');
  return `${id} ${await p.inspect(id, '{{.State.StartedAt}}')}`;
}

/**
 * `docker-compose up -d --scale appserver=N` while a steady load runs; the load goes on until the proxy
 * follows (every new replica got requests, no removed one is left in /status) and 2 s more.
 */
async function scaleUnderLoad(t: TestContext, p: ComposeProject, n: number): Promise<LoadCounts> {
  const before = await p.replicaAddresses('appserver');
  const countsBefore = await p.upstreamCounts('app');
  const load = startLoad(`${p.base}/`);
  t.after(() => load.stop());
  await sleep(2000);
  const t0 = performance.now();
  await p.compose(['up', '-d', '--scale', `appserver=${n}`]);
  const upSeconds = ((performance.now() - t0) / 1000).toFixed(1);
  const after = await p.replicaAddresses('appserver');
  assert.equal(after.size, n, `${n} appserver containers run`);
  const added = [...after.keys()].filter((ip) => !before.has(ip));
  const removed = [...before.keys()].filter((ip) => !after.has(ip));
  await until(`the proxy follows the scale to ${n} (new replicas get requests, removed ones leave)`, 60_000, async () => {
    const now = countDeltas(countsBefore, await p.upstreamCounts('app'));
    const starving = added.filter((ip) => !(now[ip] > 0));
    const stale = removed.filter((ip) => ip in now);
    if (starving.length === 0 && stale.length === 0) return true;
    return `no requests yet on ${starving.join(', ') || '-'}; still listed: ${stale.join(', ') || '-'}`;
  });
  await sleep(2000);
  const counts = await load.stop();
  const perReplica = countDeltas(countsBefore, await p.upstreamCounts('app'));
  await p.waitHealthy('appserver', n);
  report(t, `scale ${before.size} → ${n}: docker-compose up took ${upSeconds} s; load: ${describeLoad(counts)}`);
  report(t, `  requests per replica during the step: ${JSON.stringify(perReplica)} (added ${added.join(', ') || '-'}, removed ${removed.join(', ') || '-'})`);
  if (counts.failures > 0) {
    // What failed, and the proxy's log lines about it (SIGHUP flushes a buffered access log).
    const [proxy] = await p.containers('proxy');
    await p.compose(['kill', '-s', 'SIGHUP', 'proxy']).catch(() => {});
    await sleep(1000);
    const lines = (await p.logs(proxy)).split('\n');
    const errors = lines.filter((l) => /"status":5\d\d|"level":[45]0/.test(l));
    report(t, `  failed requests: ${counts.samples.join(' | ')}`);
    report(t, `  proxy log (${lines.length} lines), last warnings and errors:\n${errors.slice(-8).join('\n')}`);
  }
  return counts;
}

async function bringUp(t: TestContext, p: ComposeProject, replicas: number): Promise<void> {
  const t0 = performance.now();
  await p.compose(['up', '-d', '--scale', `appserver=${replicas}`]);
  await p.waitHealthy('proxy', 1);
  report(t, `${p.name}: up -d --scale appserver=${replicas}, proxy healthy after ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

/** `stop` (every container exits 0), then `down -v`: no container, network or volume of the project is left. */
async function stopAndRemove(t: TestContext, p: ComposeProject, engine: Engine, afterStop?: () => Promise<void>): Promise<void> {
  const ids = [...(await p.containers('proxy')), ...(await p.containers('appserver')), ...(await p.containers('flask'))];
  const t0 = performance.now();
  await p.compose(['stop']);
  const stopSeconds = ((performance.now() - t0) / 1000).toFixed(1);
  const codes = await Promise.all(ids.map(async (id) => `${await p.inspect(id, '{{.Name}}')}=${await p.inspect(id, '{{.State.ExitCode}}')}`));
  report(t, `${p.name}: stop in ${stopSeconds} s, exit codes ${codes.join(' ')}`);
  for (const c of codes) assert.match(c, /=0$/, `graceful stop: ${codes.join(' ')}`);
  await afterStop?.();
  await p.compose(['down', '-v']);
  const label = `label=com.docker.compose.project=${p.name}`;
  assert.equal((await engine.docker(['ps', '-aq', '--filter', label])).trim(), '', 'no container left');
  assert.equal((await engine.docker(['network', 'ls', '-q', '--filter', label])).trim(), '', 'no network left');
  assert.equal((await engine.docker(['volume', 'ls', '-q', '--filter', label])).trim(), '', 'no volume left');
}

test('docker compose on a real engine: build, up, prefix-aware Flask, scale 3 → 5 → 2 → 3 under load with no failed request, down', { timeout: 900_000 }, async (t) => {
  // The compose network has a fixed subnet: a route to it already on the host (another engine's
  // network, a bridge left behind) would take the traffic meant for this test's containers.
  const subnet = (await composeConfig()).model.networks?.backend?.ipam?.config?.[0]?.subnet;
  assert.ok(subnet, 'docker-compose.yml names its subnet');
  const routed = execFileSync('ip', ['route', 'show', subnet], { encoding: 'utf8' }).trim();
  assert.equal(routed, '', `${subnet} is already routed on this host (${routed}): another Docker network uses the compose subnet`);
  const t0 = performance.now();
  const engine = await startEngine();
  t.after(() => engine.stop());
  await buildBaseImages(engine);
  report(t, `engine and base images ready in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const agent = new Agent({ connections: 4 });
  t.after(() => agent.close());

  // Subtests do not inherit the parent's timeout (npm test gives every test 120 s): each is bounded here.
  await t.test('docker-compose.yml: 3 → 5 → 2 → 3 appservers under load', { timeout: 600_000 }, async (t) => {
    const p = new ComposeProject(engine, `gwrt${process.pid}`, ['docker-compose.yml'], await freePort());
    t.after(() => p.compose(['down', '-v', '--timeout', '5']).catch(() => {}));
    const b0 = performance.now();
    await p.compose(['build'], 900_000);
    report(t, `docker-compose build: ${((performance.now() - b0) / 1000).toFixed(1)} s`);
    // The runtime image runs dist/ on Node 24: no TypeScript loader in it.
    const modules = (await engine.docker(['run', '--rm', '--network', 'none', '--entrypoint', 'sh', 'gatewire:local', '-c', 'ls /app/node_modules; du -sk /app/node_modules'])).split('\n');
    for (const absent of ['tsx', 'esbuild', '@esbuild']) assert.ok(!modules.includes(absent), `${absent} is not in the image`);
    const sizes = await Promise.all(['gatewire:local', 'gatewire-flask:local'].map(async (i) => `${i} ${(Number(await engine.docker(['image', 'inspect', '-f', '{{.Size}}', i])) / 1e6).toFixed(0)} MB`));
    report(t, `images: ${sizes.join(', ')}; gatewire's node_modules ${(Number.parseInt(modules.at(-2) ?? '0', 10) / 1024).toFixed(1)} MiB`);
    await bringUp(t, p, 3);

    const hello = await get(`${p.base}/`, agent);
    assert.equal(hello.status, 200);
    assert.equal(hello.body, 'Hello, world!\n');

    // 300 requests from the host over the 3 replicas (the proxy counts them per host).
    const replicas = await p.replicaAddresses('appserver');
    assert.equal(replicas.size, 3);
    const c0 = await p.upstreamCounts('app');
    for (let i = 0; i < 300; i++) {
      const r = await get(`${p.base}/`, agent);
      assert.equal(r.status, 200);
    }
    const spread = countDeltas(c0, await p.upstreamCounts('app'));
    report(t, `300 × GET / over 3 replicas: ${JSON.stringify(spread)}`);
    for (const ip of replicas.keys()) assert.ok(spread[ip] >= 50, `replica ${replicas.get(ip)} (${ip}) got ${spread[ip]} of 300`);

    const proxy = await proxyIdentity(p);
    const steps: Array<[number, LoadCounts]> = [];
    for (const n of [5, 2, 3]) steps.push([n, await scaleUnderLoad(t, p, n)]);
    assert.equal(await proxyIdentity(p), proxy, 'the proxy container was neither recreated nor restarted');
    for (const [n, c] of steps) {
      assert.ok(c.requests > 100, `a steady load ran during the scale to ${n}: ${describeLoad(c)}`);
      assert.equal(c.failures, 0, `scale to ${n}: ${describeLoad(c)}`);
    }
    // Flask under uWSGI, mounted under /flask/: it knows its prefix, so its links lead back through the proxy.
    const index = await get(`${p.base}/flask/`, agent);
    assert.equal(index.status, 200, index.body);
    assert.equal(index.body, 'hello from flask under uWSGI\n');
    const whoami = JSON.parse((await get(`${p.base}/flask/whoami`, agent)).body);
    assert.equal(whoami.path, '/whoami');
    const links = await get(`${p.base}/flask/links`, agent);
    assert.equal(links.status, 200, links.body);
    assert.deepEqual(JSON.parse(links.body), { script_name: '/flask', whoami: '/flask/whoami', index: '/flask/' });
    const bare = await get(`${p.base}/flask`, agent);
    assert.equal(bare.status, 301, `GET /flask → ${bare.status}`);
    assert.equal(bare.headers.location, '/flask/');

    await stopAndRemove(t, p, engine);
  });

  await t.test('Unix-socket variant: one appserver on a socket in a shared volume, rolling reload under load', { timeout: 300_000 }, async (t) => {
    const p = new ComposeProject(engine, `gwrtu${process.pid}`, ['docker-compose.yml', 'deploy/docker-compose.unix-socket.yml'], await freePort());
    t.after(() => p.compose(['down', '-v', '--timeout', '5']).catch(() => {}));
    // The images are built already (same tags); build again to prove the variant's build is a no-op from cache.
    await p.compose(['build'], 900_000);
    await bringUp(t, p, 1);
    assert.equal((await get(`${p.base}/`, agent)).body, 'Hello, world!\n');
    assert.equal((await get(`${p.base}/flask/`, agent)).body, 'hello from flask under uWSGI\n');
    const [proxy] = await p.containers('proxy');
    const mode = (await engine.docker(['exec', proxy, 'stat', '-c', '%F %a %U', '/run/gatewire/app.sock'])).trim();
    assert.equal(mode, 'socket 660 node', 'the proxy container sees the appserver socket in the shared volume');

    // One socket file means one appserver container: it scales with workers, and SIGHUP reloads them one by one.
    const load = startLoad(`${p.base}/`);
    t.after(() => load.stop());
    await sleep(2000);
    const [app] = await p.containers('appserver');
    await p.compose(['kill', '-s', 'SIGHUP', 'appserver']);
    await until('the rolling reload finishes', 60_000, async () => (await p.logs(app).catch(() => '')).includes('rolling reload done'));
    await sleep(2000);
    const counts = await load.stop();
    report(t, `unix socket, SIGHUP rolling reload of 4 workers: load: ${describeLoad(counts)}`);
    assert.ok(counts.requests > 100);
    assert.equal(counts.failures, 0, describeLoad(counts));
    await stopAndRemove(t, p, engine, async () => {
      const left = await engine.docker(['run', '--rm', '--network', 'none', '-v', `${p.name}_sockets:/v`, '--entrypoint', 'ls', 'gatewire:local', '-A', '/v']);
      assert.equal(left.trim(), '', 'the appserver removed its socket file from the volume at exit');
    });
  });
});
