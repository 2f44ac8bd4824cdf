// docker-compose.yml run as `docker compose up` would run it, without Docker:
// every container is a local process started from the normalised compose
// model (image ENTRYPOINT with tini + the service command + its environment),
// appserver replicas on their own loopback addresses, the Flask service under
// Debian's uWSGI, the proxy with the mounted deploy/gatewire.yaml — whose only
// change is its resolver, pointed at a real dnsmasq that plays Docker's DNS
// (`appserver` → one A record per replica). Startup follows depends_on with
// the services' own healthcheck commands. Then requests through the published
// port must reach every replica and the Flask app; `--scale appserver=4` and
// back to 3 (hosts file + SIGHUP) must be followed without restarting the proxy;
// `docker compose down` (SIGTERM to each tini) must stop everything with exit 0.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { type TestContext, test } from 'node:test';
import YAML from 'yaml';
import { composeConfig, publishedPorts } from './helpers/deploy-compose.ts';
import { buildFlaskImage, type Container, LocalCompose } from './helpers/deploy-compose-local.ts';
import { parseDockerfile } from './helpers/deploy-dockerfile.ts';
import { buildImageTree } from './helpers/deploy-image.ts';
import { descendants } from './helpers/deploy-proctree.ts';
import { ROOT } from './helpers/procs.ts';
import { startDnsmasq } from './helpers/proxy-dnsmasq.ts';

// One address per container on the stand-in "compose network".
const IPS: Record<string, (i: number) => string> = {
  appserver: (i) => `127.77.0.${1 + i}`, // .2 .3 .4, then .5 when scaled
  flask: (i) => `127.77.0.${20 + i}`,
  proxy: (i) => `127.77.0.${30 + i}`,
};

/**
 * Mounts the proxy's config file and applies the one real override — Docker's DNS → our dnsmasq — plus
 * the container view of addresses: 127.0.0.1 in the proxy container is that container's own address,
 * and a unix: path is a path of the container's filesystem.
 */
function mountProxyConfig(compose: LocalCompose, dnsServer: string): void {
  const mounts = compose.mountVolumes('proxy');
  const configPath = Object.keys(mounts)[0];
  const doc = YAML.parseDocument(readFileSync(mounts[configPath], 'utf8'));
  doc.setIn(['resolver', 'servers'], [dnsServer]);
  doc.setIn(['admin', 'host'], IPS.proxy(1));
  const upstreams = doc.get('upstreams') as YAML.YAMLMap<YAML.Scalar<string>, YAML.YAMLMap>;
  for (const u of upstreams.items) {
    for (const server of (u.value!.get('servers') as YAML.YAMLSeq<YAML.YAMLMap>).items) {
      const address = String(server.get('address'));
      if (address.startsWith('unix:')) server.set('address', compose.containerPath('proxy', address));
    }
  }
  writeFileSync(mounts[configPath], doc.toString());
}

async function localStack(t: TestContext, files: string[]) {
  const { model } = await composeConfig(files);
  const image = await buildImageTree();
  t.after(image.cleanup);
  const flaskImage = buildFlaskImage();
  t.after(flaskImage.cleanup);
  const gatewireStage = parseDockerfile(readFileSync(`${ROOT}/Dockerfile`, 'utf8')).at(-1)!;
  const compose = new LocalCompose(
    model,
    {
      [model.services.proxy.image!]: { tree: image, stage: gatewireStage },
      [model.services.flask.image!]: flaskImage,
    },
    (service, i) => IPS[service](i),
  );
  t.after(async () => {
    for (const c of [...compose.containers].reverse()) await c.proc.stop(3000);
  });
  return { model, compose };
}

async function get(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(20_000) });
  return { status: res.status, body: await res.text() };
}

test('compose stack: proxy → 3 DNS-discovered appserver replicas + Flask/uWSGI; scale up and down live; clean stop', { timeout: 420_000 }, async (t) => {
  const { model, compose } = await localStack(t, ['docker-compose.yml']);
  const replicas = model.services.appserver.deploy!.replicas!;
  assert.equal(replicas, 3);
  const hostsFor = (apps: Container[], flask: Container) => [...apps.map((c) => `${c.ip} appserver`), `${flask.ip} flask`];

  // depends_on: appserver and flask healthy first.
  const apps: Container[] = [];
  for (let i = 1; i <= replicas; i++) apps.push(compose.start('appserver', i));
  const flask = compose.start('flask', 1);
  await Promise.all([...apps, flask].map((c) => compose.waitHealthy(c)));

  const dns = await startDnsmasq(hostsFor(apps, flask));
  t.after(() => dns.stop());

  mountProxyConfig(compose, dns.server);
  const proxy = compose.start('proxy', 1);
  await compose.waitHealthy(proxy);
  const published = publishedPorts(model.services.proxy)[0];
  const base = `http://${proxy.ip}:${published.target}`;

  /** Which appserver replica served a request: its worker pid belongs to that replica's process tree. */
  const replicaOf = (pid: number) => apps.find((c) => descendants(c.proc.child.pid!).includes(pid))?.hostname ?? `unknown pid ${pid}`;
  const spread = async (n: number) => {
    const seen: Record<string, number> = {};
    for (let i = 0; i < n; i++) {
      const r = await get(`${base}/pid`);
      assert.equal(r.status, 200, `GET /pid → ${r.status} ${r.body}`);
      const who = replicaOf(Number(r.body.trim()));
      seen[who] = (seen[who] ?? 0) + 1;
    }
    return seen;
  };

  // Every replica gets traffic; the example app answers through the gatewire protocol.
  const hello = await get(`${base}/`);
  assert.equal(hello.status, 200);
  assert.equal(hello.body, 'Hello, world!\n');
  const first = await spread(30);
  assert.deepEqual(Object.keys(first).sort(), ['appserver-1', 'appserver-2', 'appserver-3'], JSON.stringify(first));

  // The Flask service under uWSGI, through the uwsgi protocol, prefix stripped.
  const whoami = await get(`${base}/flask/whoami`);
  assert.equal(whoami.status, 200, whoami.body);
  const w = JSON.parse(whoami.body);
  assert.equal(w.server, 'flask');
  assert.equal(w.hostname, flask.hostname);
  assert.equal(w.path, '/whoami');
  assert.equal((await get(`${base}/flask/`)).body, 'hello from flask under uWSGI\n');

  // `docker compose up --scale appserver=4`: a new container, a new DNS record, the same proxy process.
  const proxyPid = proxy.proc.child.pid;
  const fourth = compose.start('appserver', 4);
  await compose.waitHealthy(fourth);
  apps.push(fourth);
  await dns.setHosts(hostsFor(apps, flask));
  const deadline = Date.now() + 60_000;
  let reached: Record<string, number> = {};
  while (!reached['appserver-4']) {
    assert.ok(Date.now() < deadline, `the new replica got no traffic within 60 s: ${JSON.stringify(reached)}`);
    reached = await spread(8);
  }
  assert.equal(proxy.proc.child.pid, proxyPid);
  assert.equal(proxy.proc.child.exitCode, null, 'the proxy was not restarted');
  assert.deepEqual(Object.keys(await spread(40)).sort(), ['appserver-1', 'appserver-2', 'appserver-3', 'appserver-4']);

  // Back to 3: the record of appserver-1 goes away first (as when compose removes the container), the proxy
  // drains it, then the container stops; no request fails on the way.
  const removed = apps[0];
  await dns.setHosts(hostsFor(apps.slice(1), flask));
  const drainDeadline = Date.now() + 60_000;
  for (;;) {
    assert.ok(Date.now() < drainDeadline, 'the removed replica still gets traffic 60 s after its DNS record went away');
    const s = await spread(12);
    if (!s[removed.hostname]) break;
  }
  assert.equal(await compose.stop(removed), 0, `appserver-1 stops gracefully:\n${removed.proc.output().slice(-2000)}`);
  assert.deepEqual(Object.keys(await spread(20)).sort(), ['appserver-2', 'appserver-3', 'appserver-4']);

  // `docker compose down`: proxy first (it depends on the others), each SIGTERM to tini → exit 0.
  assert.equal(await compose.stop(proxy), 0, `proxy:\n${proxy.proc.output().slice(-2000)}`);
  for (const c of [...apps.slice(1), flask]) assert.equal(await compose.stop(c), 0, `${c.hostname}:\n${c.proc.output().slice(-2000)}`);
});

test('shared-volume Unix-socket variant: one appserver on a socket in the shared volume behind the proxy', { timeout: 300_000 }, async (t) => {
  const { model, compose } = await localStack(t, ['docker-compose.yml', 'deploy/docker-compose.unix-socket.yml']);
  assert.equal(model.services.appserver.deploy?.replicas, 1);
  compose.mountVolumes('appserver');
  const app = compose.start('appserver', 1);
  const flask = compose.start('flask', 1);
  await Promise.all([app, flask].map((c) => compose.waitHealthy(c)));
  const dns = await startDnsmasq([`${flask.ip} flask`]);
  t.after(() => dns.stop());
  mountProxyConfig(compose, dns.server);
  const proxy = compose.start('proxy', 1);
  await compose.waitHealthy(proxy);
  const base = `http://${proxy.ip}:${publishedPorts(model.services.proxy)[0].target}`;

  const sock = compose.containerPath('appserver', '/run/gatewire/app.sock');
  assert.ok(statSync(sock).isSocket(), 'the appserver listens on the socket in the shared volume');
  assert.equal((statSync(sock).mode & 0o777).toString(8), '660', '--chmod-socket 660');
  const workers = new Set<string>();
  for (let i = 0; i < 20; i++) {
    const r = await get(`${base}/pid`);
    assert.equal(r.status, 200);
    workers.add(r.body.trim());
  }
  assert.ok(descendants(app.proc.child.pid!).includes(Number([...workers][0])), 'served by the appserver container');
  assert.equal((await get(`${base}/`)).body, 'Hello, world!\n');
  assert.equal((await get(`${base}/flask/`)).body, 'hello from flask under uWSGI\n');

  assert.equal(await compose.stop(proxy), 0, proxy.proc.output().slice(-2000));
  assert.equal(await compose.stop(app), 0, app.proc.output().slice(-2000));
  assert.equal(await compose.stop(flask), 0);
  assert.ok(!existsSync(sock), 'the socket file is removed at exit');
});
