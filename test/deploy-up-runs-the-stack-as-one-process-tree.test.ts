// `npm start` = `gatewire up`: with no config it runs an appserver (2 workers,
// example app, a loopback port it binds as port 0 and reports; with --unix a socket in a private runtime
// dir) behind the proxy, prints the URL, and on Ctrl-C stops everything
// gracefully: exit 0, no process and no file left. With --config, the `apps:`
// section names the appservers. A child that dies takes the stack down with a
// non-zero exit.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import YAML from 'yaml';
import { alive, cmdlineOf, descendants, waitGone } from './helpers/deploy-proctree.ts';
import { freePort, tempDir } from './helpers/net.ts';
import { ROOT, startGatewire } from './helpers/procs.ts';

const UP_TIMEOUT = 90_000;

/** Environment of a user's shell, with temp files (the runtime dir) kept in `tmp`. */
function userEnv(tmp: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, TMPDIR: tmp };
  delete env.XDG_RUNTIME_DIR;
  for (const k of Object.keys(env)) if (k.startsWith('GATEWIRE_') || k.startsWith('NODE_TEST')) delete env[k];
  return env;
}

/** What `up` and its children left in `dir` (tsx's and Node's compile caches, tsx-* and node-compile-cache, are not theirs). */
const leftovers = (dir: string) => readdirSync(dir).filter((n) => !n.startsWith('tsx-') && n !== 'node-compile-cache');

async function getText(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(20_000) });
  return { status: res.status, body: await res.text() };
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} after ${ms} ms`)), ms)))]).finally(() =>
    clearTimeout(timer),
  );
}

test('npm start is `gatewire up`', () => {
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  assert.equal(pkg.scripts.start, 'node bin/gatewire.js up');
});

test('embedded default: serves on --port through an appserver on a loopback port, Ctrl-C exits 0 with no process and no file left', { timeout: 180_000 }, async (t) => {
  const { dir, cleanup } = tempDir('gw-up-');
  t.after(cleanup);
  const port = await freePort();
  const adminPort = await freePort();
  const up = startGatewire(['up', '--port', String(port), '--admin-port', String(adminPort), '--proxy-workers', '2'], { env: userEnv(dir) });
  t.after(() => up.stop(2000));
  await up.waitFor(new RegExp(`gatewire is up: open http://127\\.0\\.0\\.1:${port}/`), UP_TIMEOUT);

  // The runtime dir holds the generated proxy config, whose one upstream is the appserver's loopback port.
  const runtimeDirs = leftovers(dir);
  assert.equal(runtimeDirs.length, 1, `one runtime dir in ${dir}: ${runtimeDirs}`);
  assert.match(runtimeDirs[0], /^gatewire-/);
  assert.deepEqual(readdirSync(path.join(dir, runtimeDirs[0])).sort(), ['app.bound', 'gatewire.yaml'], 'no socket file: the appserver listens on TCP');
  const generated = YAML.parse(readFileSync(path.join(dir, runtimeDirs[0], 'gatewire.yaml'), 'utf8'));
  const upstream: string = generated.upstreams.app.servers[0].address;
  assert.match(upstream, /^127\.0\.0\.1:[1-9]\d*$/);
  // the appserver was started on port 0 and the config names the port the kernel gave it
  assert.equal(readFileSync(path.join(dir, runtimeDirs[0], 'app.bound'), 'utf8'), `${upstream}\n`);

  for (let i = 0; i < 20; i++) {
    const r = await getText(`http://127.0.0.1:${port}/`);
    assert.equal(r.status, 200, `request ${i}: ${r.status} ${r.body}`);
    assert.ok(r.body.length > 0);
  }
  assert.equal((await getText(`http://127.0.0.1:${adminPort}/healthz`)).status, 200, 'the proxy admin answers /healthz');

  // One process tree: the proxy, the appserver master and its 2 workers all under `up`.
  const tree = descendants(up.child.pid!);
  const cmdlines = tree.map(cmdlineOf);
  assert.ok(cmdlines.some((c) => / proxy --config /.test(c)), `a proxy child: ${cmdlines.join(' | ')}`);
  assert.ok(cmdlines.some((c) => c.includes(` serve `) && c.includes(' --listen 127.0.0.1:0 --workers 2 --bound-file ')), `an appserver child on port 0: ${cmdlines.join(' | ')}`);
  assert.ok(tree.length >= 6, `proxy master + 2 workers + appserver master + 2 workers, got ${tree.length}: ${cmdlines.join(' | ')}`);
  const proxyMaster = tree.find((p) => / proxy --config [^ ]+$/.test(cmdlineOf(p)));
  assert.ok(proxyMaster, `the proxy master: ${cmdlines.join(' | ')}`);
  assert.equal(descendants(proxyMaster).length, 2, '--proxy-workers 2: two proxy workers under the proxy master');
  const status = (await (await fetch(`http://127.0.0.1:${adminPort}/status`)).json()) as { workers: unknown[] };
  assert.equal(status.workers.length, 2, 'the admin /status answers for both proxy workers');

  up.kill('SIGINT');
  const code = await withTimeout(up.exited, 60_000, '`gatewire up` did not exit on SIGINT');
  assert.equal(code, 0, up.output().slice(-3000));
  await waitGone(tree, 15_000);
  assert.deepEqual(leftovers(dir), [], 'the runtime dir is removed');
});

test('--unix: the appserver on a socket in the runtime dir; a child dying takes the stack down, up exits non-zero and says why', { timeout: 180_000 }, async (t) => {
  const { dir, cleanup } = tempDir('gw-up-');
  t.after(cleanup);
  const port = await freePort();
  const up = startGatewire(['up', '--unix', '--port', String(port), '--admin-port', '0'], { env: userEnv(dir) });
  t.after(() => up.stop(2000));
  await up.waitFor(/gatewire is up/, UP_TIMEOUT);
  const runtimeDirs = leftovers(dir);
  assert.equal(runtimeDirs.length, 1, `one runtime dir in ${dir}: ${runtimeDirs}`);
  const sock = path.join(dir, runtimeDirs[0], 'app.sock');
  assert.ok(statSync(sock).isSocket(), `${sock} is a Unix socket`);
  assert.equal((await getText(`http://127.0.0.1:${port}/`)).status, 200);
  const tree = descendants(up.child.pid!);
  assert.ok(tree.map(cmdlineOf).some((c) => / serve .*--listen unix:.*app\.sock --workers 2/.test(c)), 'the appserver listens on the socket');
  const proxyPid = tree.find((p) => / proxy --config /.test(cmdlineOf(p)));
  assert.ok(proxyPid, 'the proxy child');
  process.kill(proxyPid, 'SIGKILL');
  const code = await withTimeout(up.exited, 60_000, '`gatewire up` did not exit after its proxy died');
  assert.equal(code, 1);
  assert.match(up.output(), /proxy exited unexpectedly \(killed by SIGKILL\); stopping the rest/);
  await waitGone(tree, 15_000);
  assert.deepEqual(leftovers(dir), [], 'the runtime dir is removed');
});

test('up --config: the apps: section starts local appservers before the proxy; SIGTERM stops all', { timeout: 180_000 }, async (t) => {
  const { dir, cleanup } = tempDir('gw-upc-');
  t.after(cleanup);
  const port = await freePort();
  const adminPort = await freePort();
  const sock = path.join(dir, 'hello.sock');
  const file = path.join(dir, 'gatewire.yaml');
  writeFileSync(
    file,
    `# a developer's whole stack in one file
apps:
  - name: hello
    app: examples/hello.ts
    listen: unix:${sock}
    workers: 1
    env:
      GATEWIRE_LOG_LEVEL: warn
listen: { host: 127.0.0.1, port: ${port} }
admin: { host: 127.0.0.1, port: ${adminPort} }
routes:
  - match: { path_prefix: / }
    upstream: hello
upstreams:
  hello:
    protocol: gatewire
    servers:
      - address: unix:${sock}
`,
  );
  const up = startGatewire(['up', '--config', file], { env: userEnv(dir) });
  t.after(() => up.stop(2000));
  await up.waitFor(new RegExp(`gatewire is up: open http://127\\.0\\.0\\.1:${port}/`), UP_TIMEOUT);
  const tree = descendants(up.child.pid!);
  const app = tree.find((p) => / serve examples\/hello\.ts --listen unix:/.test(cmdlineOf(p)));
  assert.ok(app, `the appserver from apps[0]: ${tree.map(cmdlineOf).join(' | ')}`);
  assert.equal(readFileSync(`/proc/${app}/environ`, 'utf8').split('\0').includes('GATEWIRE_LOG_LEVEL=warn'), true, 'apps[0].env reaches the appserver');
  for (let i = 0; i < 10; i++) assert.equal((await getText(`http://127.0.0.1:${port}/`)).status, 200);

  up.kill('SIGTERM');
  assert.equal(await withTimeout(up.exited, 60_000, '`gatewire up` did not exit on SIGTERM'), 0, up.output().slice(-3000));
  await waitGone(tree, 15_000);
  assert.ok(!existsSync(sock), 'the appserver removed its socket');
  assert.equal(alive(app), false);
});

test('up --config: a bad apps: entry is reported FILE:LINE:COL before anything starts', { timeout: 60_000 }, async (t) => {
  const { dir, cleanup } = tempDir('gw-upc-');
  t.after(cleanup);
  const file = path.join(dir, 'bad.yaml');
  writeFileSync(
    file,
    `apps:
  - app: examples/hello.ts
    listen: unix:${dir}/a.sock
    workers: none
routes:
  - match: { path_prefix: / }
    upstream: a
upstreams:
  a:
    servers: [{ address: "unix:${dir}/a.sock" }]
`,
  );
  const up = startGatewire(['up', '--config', file], { env: userEnv(dir) });
  t.after(() => up.stop(2000));
  assert.equal(await withTimeout(up.exited, 30_000, 'did not exit'), 1);
  assert.match(up.output(), new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:4:14: apps\\[0\\]\\.workers: expected a whole number, got "none"`));
  assert.doesNotMatch(up.output(), /gatewire is up/);
  assert.deepEqual(leftovers(dir), ['bad.yaml'], 'nothing was started');
});

test('deploy/gatewire.local.yaml (the documented dev stack: a Fetch app and an Express app) runs under up --config', { timeout: 180_000 }, async (t) => {
  const { dir, cleanup } = tempDir('gw-upl-');
  t.after(cleanup);
  const port = await freePort();
  const adminPort = await freePort();
  // The shipped file, with its fixed port and socket paths moved out of the way of anything else running.
  const doc = YAML.parseDocument(readFileSync(path.join(ROOT, 'deploy/gatewire.local.yaml'), 'utf8').replaceAll('/tmp/gatewire-', `${dir}/`));
  doc.setIn(['listen', 'port'], port);
  doc.setIn(['admin', 'port'], adminPort);
  const file = path.join(dir, 'gatewire.local.yaml');
  writeFileSync(file, doc.toString());
  const up = startGatewire(['up', '--config', file], { env: userEnv(dir) });
  t.after(() => up.stop(2000));
  await up.waitFor(/gatewire is up/, UP_TIMEOUT);
  assert.equal((await getText(`http://127.0.0.1:${port}/`)).body, 'Hello, world!\n');
  assert.equal((await getText(`http://127.0.0.1:${port}/express/`)).body, 'Hello from Express\n');
  const user = JSON.parse((await getText(`http://127.0.0.1:${port}/express/users/7?x=1`)).body);
  assert.equal(user.id, '7');
  const tree = descendants(up.child.pid!);
  up.kill('SIGINT');
  assert.equal(await withTimeout(up.exited, 60_000, '`gatewire up` did not exit on SIGINT'), 0, up.output().slice(-3000));
  await waitGone(tree, 15_000);
  assert.deepEqual(leftovers(dir).filter((n) => n.endsWith('.sock')), [], 'both sockets removed');
});
