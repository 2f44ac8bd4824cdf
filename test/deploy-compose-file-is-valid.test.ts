// docker-compose.yml (and the Unix-socket override) as Docker Compose reads
// them: Debian's `docker-compose config` must accept them, and the normalised
// model must describe the documented stack — proxy published on 8080 with its
// admin port private, 3 appserver replicas found through DNS, a Flask/uWSGI
// service spoken to with the uwsgi protocol, health checks, and startup
// ordered on health.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { parseConfig } from '../proxy/config.ts';
import { argvOf, bindMounts, composeConfig, healthcheckArgv, publishedPorts } from './helpers/deploy-compose.ts';
import { ROOT } from './helpers/procs.ts';

const flagValue = (argv: string[], flag: string) => {
  const i = argv.indexOf(flag);
  return i < 0 ? undefined : argv[i + 1];
};

test('docker-compose config accepts docker-compose.yml: services, replicas, ports, health, ordering', { timeout: 90_000 }, async () => {
  const { model } = await composeConfig();
  assert.deepEqual(Object.keys(model.services).sort(), ['appserver', 'flask', 'proxy']);
  const { proxy, appserver, flask } = model.services;

  // proxy: 8080 published, nothing else; config mounted read-only where its command reads it
  assert.deepEqual(
    publishedPorts(proxy).map((p) => [p.published, p.target]),
    [[8080, 8080]],
  );
  assert.deepEqual(publishedPorts(appserver), [], 'appservers are reachable only on the compose network');
  assert.deepEqual(publishedPorts(flask), []);
  const proxyArgv = argvOf(proxy.command);
  assert.equal(proxyArgv[0], 'proxy');
  const configPath = flagValue(proxyArgv, '--config')!;
  const mount = bindMounts(proxy).find((m) => m.target === configPath);
  assert.ok(mount, `the proxy config ${configPath} is mounted`);
  assert.equal(mount.source, path.join(ROOT, 'deploy/gatewire.yaml'));
  assert.ok(mount.readOnly);

  // appserver: 3 replicas of the built example app on 0.0.0.0:9000, only the compose network allowed
  assert.equal(appserver.deploy?.replicas, 3);
  const appArgv = argvOf(appserver.command);
  assert.deepEqual(appArgv.slice(0, 2), ['serve', 'dist/examples/hello.js']);
  assert.equal(flagValue(appArgv, '--listen'), '0.0.0.0:9000');
  const subnet = model.networks?.backend?.ipam?.config?.[0]?.subnet;
  assert.ok(subnet, 'the backend network has a fixed subnet');
  assert.ok(flagValue(appArgv, '--allow-from')?.split(',').includes(subnet), `--allow-from names ${subnet}`);
  assert.equal(proxy.image, appserver.image, 'one image for both roles');

  // every service has a health check; the proxy starts once both backends are healthy
  for (const [name, svc] of Object.entries(model.services)) assert.ok(healthcheckArgv(svc), `${name} has a healthcheck`);
  assert.deepEqual(proxy.depends_on, { appserver: { condition: 'service_healthy' }, flask: { condition: 'service_healthy' } });

  // flask: built from deploy/flask, uWSGI on 3031
  assert.equal(flask.build?.context, path.join(ROOT, 'deploy/flask'));
  const flaskArgv = argvOf(flask.command);
  assert.equal(flaskArgv[0], 'uwsgi');
  assert.equal(flagValue(flaskArgv, '--socket'), '0.0.0.0:3031');
});

test('deploy/gatewire.yaml passes the proxy validation and addresses the compose services by name with resolve: true', async () => {
  const { model } = await composeConfig();
  const cfg = parseConfig(readFileSync(path.join(ROOT, 'deploy/gatewire.yaml'), 'utf8'), 'deploy/gatewire.yaml');
  const appPort = flagValue(argvOf(model.services.appserver.command), '--listen')!.split(':')[1];
  const flaskPort = flagValue(argvOf(model.services.flask.command), '--socket')!.split(':')[1];
  const app = Object.values(cfg.upstreams).find((u) => u.servers.some((s) => s.address === `appserver:${appPort}`));
  assert.ok(app, `an upstream with server appserver:${appPort}`);
  assert.equal(app.protocol, 'gatewire');
  assert.ok(app.servers.every((s) => s.resolve), 'resolve: true (every replica is a server; --scale is picked up)');
  const flask = Object.values(cfg.upstreams).find((u) => u.servers.some((s) => s.address === `flask:${flaskPort}`));
  assert.ok(flask, `an upstream with server flask:${flaskPort}`);
  assert.equal(flask.protocol, 'uwsgi');
  assert.ok(cfg.routes.some((r) => r.upstream === app.name) && cfg.routes.some((r) => r.upstream === flask.name));
  // the proxy listens where the published port points; admin stays inside the container (its health check uses it)
  assert.equal(cfg.listen.port, publishedPorts(model.services.proxy)[0].target);
  assert.equal(cfg.listen.host, '0.0.0.0');
  assert.equal(cfg.admin?.host, '127.0.0.1');
  const hc = healthcheckArgv(model.services.proxy)!;
  assert.ok(hc.includes(`http://127.0.0.1:${cfg.admin?.port}/healthz`), `proxy healthcheck probes the admin /healthz: ${hc.join(' ')}`);
});

test('the shared-volume Unix-socket variant is valid and consistent', { timeout: 90_000 }, async () => {
  const { model } = await composeConfig(['docker-compose.yml', 'deploy/docker-compose.unix-socket.yml']);
  const { proxy, appserver } = model.services;
  const listen = flagValue(argvOf(appserver.command), '--listen')!;
  assert.match(listen, /^unix:\//);
  const sockDir = path.posix.dirname(listen.slice(5));
  const volOf = (svc: typeof proxy) =>
    (svc.volumes ?? []).map((v) => (typeof v === 'string' ? v.split(':') : [v.source, v.target])).find(([, target]) => target === sockDir)?.[0];
  assert.ok(volOf(appserver), `appserver mounts a volume at ${sockDir}`);
  assert.equal(volOf(proxy), volOf(appserver), 'the proxy mounts the same volume');
  assert.ok(model.volumes && volOf(appserver)! in model.volumes, 'a named volume');
  assert.equal(appserver.deploy?.replicas, 1, 'one socket file, one appserver');
  const configPath = flagValue(argvOf(proxy.command), '--config')!;
  const mount = bindMounts(proxy).find((m) => m.target === configPath)!;
  const cfg = parseConfig(readFileSync(mount.source, 'utf8'), mount.source);
  assert.ok(
    Object.values(cfg.upstreams).some((u) => u.servers.some((s) => s.address === listen)),
    `the proxy config addresses ${listen}`,
  );
  assert.ok(healthcheckArgv(appserver)!.includes(listen), 'the health check probes the socket');
});
