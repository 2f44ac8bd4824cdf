// No cluster here: the manifests in deploy/kubernetes/ are parsed and checked
// for what a cluster would need to run them as documented — a headless Service
// in front of the appserver Deployment (one DNS record per pod, the proxy's
// `resolve: true`), a proxy Deployment mounting a ConfigMap whose gatewire.yaml
// passes the proxy's own validation, and names, labels and ports that agree.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import YAML from 'yaml';
import { parseConfig } from '../proxy/config.ts';
import { ROOT } from './helpers/procs.ts';

const DIR = path.join(ROOT, 'deploy/kubernetes');
type K8s = Record<string, any>;

function loadAll(): K8s[] {
  const out: K8s[] = [];
  for (const f of readdirSync(DIR).filter((n) => /\.ya?ml$/.test(n))) {
    for (const doc of YAML.parseAllDocuments(readFileSync(path.join(DIR, f), 'utf8'))) {
      assert.equal(doc.errors.length, 0, `${f}: ${doc.errors.map((e) => e.message).join('; ')}`);
      const obj = doc.toJS() as K8s | null;
      if (obj) out.push({ ...obj, __file: f });
    }
  }
  return out;
}

const objects = loadAll();
const find = (kind: string, pred: (o: K8s) => boolean = () => true) => objects.filter((o) => o.kind === kind && pred(o));
const one = (kind: string, pred: (o: K8s) => boolean, what: string) => {
  const r = find(kind, pred);
  assert.equal(r.length, 1, `exactly one ${kind} ${what}, found ${r.length}`);
  return r[0];
};
const selects = (selector: Record<string, string>, labels: Record<string, string>) =>
  Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels?.[k] === v);
/** Deployment whose pods a Service selects. */
const deploymentBehind = (svc: K8s) => one('Deployment', (d) => selects(svc.spec.selector, d.spec.template.metadata.labels), `selected by Service ${svc.metadata.name}`);
/** The container port a Service port targets (by name or number). */
function targetContainerPort(svc: K8s, portName: string, dep: K8s) {
  const sp = svc.spec.ports.find((p: K8s) => p.name === portName);
  assert.ok(sp, `Service ${svc.metadata.name} has a port named ${portName}`);
  const ports = dep.spec.template.spec.containers.flatMap((c: K8s) => c.ports ?? []);
  const target = sp.targetPort ?? sp.port;
  const cp = ports.find((p: K8s) => (typeof target === 'string' ? p.name === target : p.containerPort === target));
  assert.ok(cp, `Service ${svc.metadata.name} port ${portName} targets container port ${target} of ${dep.metadata.name}`);
  return { servicePort: sp.port as number, containerPort: cp.containerPort as number };
}

test('every manifest is a well-formed object in one namespace, Deployment selectors match their pods', () => {
  assert.ok(objects.length >= 5);
  const ns = one('Namespace', () => true, 'for gatewire').metadata.name;
  for (const o of objects) {
    assert.ok(o.apiVersion && o.kind && o.metadata?.name, `${o.__file}: apiVersion, kind, metadata.name`);
    if (o.kind !== 'Namespace') assert.equal(o.metadata.namespace, ns, `${o.kind} ${o.metadata.name} in namespace ${ns}`);
  }
  for (const d of find('Deployment')) {
    assert.equal(d.apiVersion, 'apps/v1');
    assert.ok(selects(d.spec.selector.matchLabels, d.spec.template.metadata.labels), `${d.metadata.name}: selector matches template labels`);
    for (const c of d.spec.template.spec.containers) {
      assert.ok(c.image, `${d.metadata.name}/${c.name} has an image`);
      assert.ok(c.readinessProbe, `${d.metadata.name}/${c.name} has a readiness probe`);
      assert.ok(!c.command, `${d.metadata.name}/${c.name} keeps the image ENTRYPOINT (tini) and sets args only`);
    }
    assert.equal(d.spec.template.spec.securityContext?.runAsNonRoot, true, `${d.metadata.name} runs as non-root`);
  }
});

test('the appserver is a Deployment behind a headless Service (clusterIP: None) on the port it listens on', () => {
  const dep = one('Deployment', (d) => d.spec.template.spec.containers.some((c: K8s) => c.args?.[0] === 'serve'), 'running gatewire serve');
  assert.ok(dep.spec.replicas >= 2, 'several appserver pods');
  const svc = one('Service', (s) => selects(s.spec.selector, dep.spec.template.metadata.labels), 'for the appserver');
  assert.equal(svc.spec.clusterIP, 'None', 'headless: DNS answers one A record per pod');
  const { servicePort, containerPort } = targetContainerPort(svc, svc.spec.ports[0].name, dep);
  assert.equal(servicePort, containerPort, 'headless Service records point at pods directly: service port = container port');
  const args: string[] = dep.spec.template.spec.containers[0].args;
  const listen = args[args.indexOf('--listen') + 1];
  assert.equal(listen, `0.0.0.0:${containerPort}`, 'the appserver listens on the container port, on all pod addresses');
  assert.equal(args[1], 'dist/examples/hello.js', 'runs the built example app (the image has no TypeScript sources)');
});

test('the proxy ConfigMap passes the proxy config validation and names the headless Service by FQDN with resolve: true', () => {
  const appSvc = one('Service', (s) => s.spec.clusterIP === 'None', 'headless');
  const proxyDep = one('Deployment', (d) => d.spec.template.spec.containers.some((c: K8s) => c.args?.[0] === 'proxy'), 'running gatewire proxy');
  const container = proxyDep.spec.template.spec.containers.find((c: K8s) => c.args?.[0] === 'proxy');
  const configPath: string = container.args[container.args.indexOf('--config') + 1];
  // The --config file is a key of a ConfigMap mounted at its directory.
  const mount = container.volumeMounts.find((m: K8s) => m.mountPath === path.posix.dirname(configPath));
  assert.ok(mount, `a volume is mounted at ${path.posix.dirname(configPath)}`);
  const volume = proxyDep.spec.template.spec.volumes.find((v: K8s) => v.name === mount.name);
  assert.ok(volume?.configMap, `volume ${mount.name} is a ConfigMap`);
  const cm = one('ConfigMap', (c) => c.metadata.name === volume.configMap.name, `named ${volume.configMap.name}`);
  const key = path.posix.basename(configPath);
  assert.equal(typeof cm.data?.[key], 'string', `ConfigMap ${cm.metadata.name} has the key ${key}`);

  const cfg = parseConfig(cm.data[key], `${cm.__file}:${key}`);
  const ns = appSvc.metadata.namespace;
  const fqdn = `${appSvc.metadata.name}.${ns}.svc.cluster.local`;
  const appDep = deploymentBehind(appSvc);
  const { servicePort } = targetContainerPort(appSvc, appSvc.spec.ports[0].name, appDep);
  const resolved = Object.values(cfg.upstreams).flatMap((u) => u.servers.filter((s) => s.resolve));
  assert.ok(
    resolved.some((s) => s.address === `${fqdn}:${servicePort}`),
    `an upstream server ${fqdn}:${servicePort} with resolve: true, got ${JSON.stringify(resolved)}`,
  );
  const up = Object.values(cfg.upstreams).find((u) => u.servers.some((s) => s.address.startsWith(fqdn)))!;
  assert.equal(up.protocol, 'gatewire');
  assert.ok(cfg.routes.some((r) => r.upstream === up.name), 'a route sends traffic to it');

  // The proxy Service reaches the port the config listens on; the admin port stays pod-local.
  const proxySvc = one('Service', (s) => selects(s.spec.selector, proxyDep.spec.template.metadata.labels), 'for the proxy');
  assert.notEqual(proxySvc.spec.clusterIP, 'None');
  const { containerPort } = targetContainerPort(proxySvc, proxySvc.spec.ports[0].name, proxyDep);
  assert.equal(containerPort, cfg.listen.port, 'Service → container port → proxy listen port');
  assert.equal(cfg.listen.host, '0.0.0.0', 'the proxy listens on the pod address');
  assert.equal(cfg.admin?.host, '127.0.0.1', 'admin endpoints are not reachable from other pods');
  const probe = container.readinessProbe.exec.command as string[];
  assert.ok(probe.includes(`http://127.0.0.1:${cfg.admin?.port}/healthz`), `readiness probes the admin /healthz: ${probe.join(' ')}`);
});

test('pods are drained before they stop: grace period longer than the preStop pause, appservers reachable only from proxies', () => {
  for (const d of find('Deployment')) {
    const spec = d.spec.template.spec;
    const pause = Number(spec.containers[0].lifecycle?.preStop?.exec?.command?.at(-1) ?? 0);
    assert.ok(pause > 0, `${d.metadata.name} pauses before SIGTERM so endpoints/DNS drop it first`);
    assert.ok(spec.terminationGracePeriodSeconds > pause + 30, `${d.metadata.name}: grace period covers the pause + the graceful timeout`);
  }
  const appSvc = one('Service', (s) => s.spec.clusterIP === 'None', 'headless');
  const appDep = deploymentBehind(appSvc);
  const proxyDep = one('Deployment', (d) => d !== appDep, 'the proxy');
  const pol = one('NetworkPolicy', (p) => selects(p.spec.podSelector.matchLabels, appDep.spec.template.metadata.labels), 'for the appservers');
  const from = pol.spec.ingress.flatMap((r: K8s) => r.from);
  assert.ok(from.length > 0 && from.every((f: K8s) => selects(f.podSelector.matchLabels, proxyDep.spec.template.metadata.labels)), 'only proxy pods may connect');
});
