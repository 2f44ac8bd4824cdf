// `docker compose up` without Docker: each container of the normalised compose
// model becomes a local process, run the way the container would run it —
// the image's ENTRYPOINT (tini included) + the service's command, the image's
// WORKDIR and ENV + the service's environment, bind mounts copied into a fake
// container root, and one loopback address per container (127.77.0.x) standing
// in for its address on the compose network. Inside a container, 0.0.0.0 and
// 127.0.0.1 are that container's own addresses, so they are rewritten to its
// loopback address; the compose subnet becomes 127.0.0.0/8 (every loopback
// peer). Service names are resolved by a real DNS server (dnsmasq) instead of
// Docker's embedded one.
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { argvOf, bindMounts, type ComposeModel, type ComposeService, healthcheckArgv } from './deploy-compose.ts';
import { lastOf, parseDockerfile, type Stage } from './deploy-dockerfile.ts';
import type { ImageTree } from './deploy-image.ts';
import { tempDir } from './net.ts';
import { type Proc, ROOT, startProcess } from './procs.ts';
import { requireTool } from './tools.ts';

const run = promisify(execFile);

/** An image as the tests run it: a file tree plus the runtime stage of its Dockerfile. */
export interface LocalImage {
  tree: Pick<ImageTree, 'root' | 'containerPath' | 'mount'>;
  stage: Stage;
}

/** The flask image of deploy/flask/Dockerfile: its COPY lines applied to a fake root. */
export function buildFlaskImage(): LocalImage & { cleanup: () => void } {
  const context = path.join(ROOT, 'deploy/flask');
  const stages = parseDockerfile(readFileSync(path.join(context, 'Dockerfile'), 'utf8'));
  const stage = stages.at(-1)!;
  const { dir, cleanup } = tempDir('gw-flask-');
  const containerPath = (p: string) => path.join(dir, p);
  for (const c of stage.instructions.filter((i) => i.op === 'COPY')) {
    const dest = c.args.at(-1)!;
    for (const src of c.args.slice(0, -1)) {
      const target = dest.endsWith('/') ? path.join(containerPath(dest), path.basename(src)) : containerPath(dest);
      mkdirSync(path.dirname(target), { recursive: true });
      cpSync(path.join(context, src), target, { recursive: true });
    }
  }
  return {
    tree: {
      root: dir,
      containerPath,
      mount: () => {
        throw new Error('no bind mounts in the flask service');
      },
    },
    stage,
    cleanup,
  };
}

export interface Container {
  service: string;
  /** 1-based, like compose's container names (project-service-1). */
  index: number;
  ip: string;
  hostname: string;
  argv: string[];
  proc: Proc;
}

/** Executables of the images mapped to this machine's. */
function hostExecutable(name: string): string {
  if (name === 'node') return process.execPath;
  return requireTool(path.basename(name));
}

export class LocalCompose {
  readonly containers: Container[] = [];

  private readonly model: ComposeModel;
  private readonly images: Record<string, LocalImage>;
  private readonly ipOf: (service: string, index: number) => string;
  constructor(
    model: ComposeModel,
    images: Record<string, LocalImage>,
    ipOf: (service: string, index: number) => string,
  ) {
    this.model = model;
    this.images = images;
    this.ipOf = ipOf;
  }

  private subnet(): string | undefined {
    return Object.values(this.model.networks ?? {}).find((n) => n?.ipam?.config?.[0]?.subnet)?.ipam?.config?.[0]?.subnet;
  }

  private image(service: string): { svc: ComposeService; image: LocalImage } {
    const svc = this.model.services[service];
    const image = this.images[svc.image ?? ''];
    if (!image) throw new Error(`no local image for ${service} (${svc.image})`);
    return { svc, image };
  }

  /** A container-side argument as seen on this machine. */
  private mapArg(arg: string, ip: string, image: LocalImage): string {
    const subnet = this.subnet();
    if (subnet) arg = arg.split(subnet).join('127.0.0.0/8');
    arg = arg.replace(/^(0\.0\.0\.0|127\.0\.0\.1):(\d+)$/, `${ip}:$2`).replace(/^(https?:\/\/)(?:127\.0\.0\.1|localhost)(?=[:/])/, `$1${ip}`);
    if (arg.startsWith('unix:/')) return `unix:${image.tree.containerPath(arg.slice(5))}`;
    // Files of the image or of a mount; other absolute-looking arguments (an HTTP path such as "/") stay.
    if (arg.startsWith('/') && arg !== '/' && existsSync(image.tree.containerPath(arg))) return image.tree.containerPath(arg);
    return arg;
  }

  /** The container's process argv (entrypoint + command) and options, mapped to this machine. */
  private processOf(service: string, ip: string, hostname: string, argvOverride?: string[]) {
    const { svc, image } = this.image(service);
    const entry = svc.entrypoint !== undefined ? argvOf(svc.entrypoint) : (lastOf(image.stage, 'ENTRYPOINT')?.json ?? []);
    const cmd = argvOverride ?? (svc.command !== undefined ? argvOf(svc.command) : (lastOf(image.stage, 'CMD')?.json ?? []));
    const argv = [...entry, ...cmd];
    const mapped = argv.map((a, i) => (i === 0 || (entry[0]?.endsWith('tini') && i === entry.indexOf('--') + 1) ? hostExecutable(a) : this.mapArg(a, ip, image)));
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: image.tree.root,
      HOSTNAME: hostname,
      // tini is PID 1 in the container; here it registers as a subreaper instead (same reaping, no warning).
      TINI_SUBREAPER: '1',
    };
    for (const e of image.stage.instructions.filter((i) => i.op === 'ENV')) {
      for (const m of e.raw.matchAll(/(\w+)=("[^"]*"|\S+)/g)) env[m[1]] = m[2].replace(/^"|"$/g, '');
    }
    for (const [k, v] of Object.entries(svc.environment ?? {})) env[k] = v ?? '';
    const workdir = lastOf(image.stage, 'WORKDIR')?.raw ?? '/';
    return { argv, mapped, env, cwd: image.tree.containerPath(workdir) };
  }

  /**
   * Copies the service's bind mounts into its image tree (returns container path → local copy) and
   * creates the mount points of its named volumes. Containers of one image share one tree, so a
   * named volume mounted at the same path by two services is shared, as in Docker.
   */
  mountVolumes(service: string): Record<string, string> {
    const { svc, image } = this.image(service);
    const out: Record<string, string> = {};
    for (const m of bindMounts(svc)) out[m.target] = image.tree.mount(m.source, m.target);
    for (const v of svc.volumes ?? []) {
      const [source, target] = typeof v === 'string' ? v.split(':') : [v.source, v.target];
      if (source && !path.isAbsolute(source) && target && this.model.volumes && source in this.model.volumes) {
        mkdirSync(image.tree.containerPath(target), { recursive: true });
      }
    }
    return out;
  }

  /** A container path (or unix:PATH address) as seen from this machine. */
  containerPath(service: string, p: string): string {
    const { image } = this.image(service);
    return p.startsWith('unix:') ? `unix:${image.tree.containerPath(p.slice(5))}` : image.tree.containerPath(p);
  }

  /** Starts replica `index` of `service` (what `docker compose up` does per container). */
  start(service: string, index: number): Container {
    const ip = this.ipOf(service, index);
    const hostname = `${service}-${index}`;
    const { argv, mapped, env, cwd } = this.processOf(service, ip, hostname);
    const proc = startProcess(mapped[0], mapped.slice(1), { cwd, env });
    const c: Container = { service, index, ip, hostname, argv, proc };
    this.containers.push(c);
    return c;
  }

  /** Runs the service's healthcheck inside "the container" until it passes, like depends_on: service_healthy. */
  async waitHealthy(c: Container, timeoutMs = 60_000): Promise<void> {
    const { svc } = this.image(c.service);
    const test = healthcheckArgv(svc);
    if (!test) throw new Error(`${c.service} has no healthcheck`);
    const { mapped, env, cwd } = this.processOf(c.service, c.ip, c.hostname, test);
    // A healthcheck runs through `docker exec`: no entrypoint, the test argv itself.
    const entryLen = mapped.length - test.length;
    const argv = mapped.slice(entryLen);
    argv[0] = hostExecutable(test[0]);
    const deadline = Date.now() + timeoutMs;
    let last = '';
    for (;;) {
      if (c.proc.child.exitCode !== null || c.proc.child.signalCode !== null) {
        throw new Error(`${c.hostname} exited before it was healthy:\n${c.proc.output().slice(-3000)}`);
      }
      try {
        await run(argv[0], argv.slice(1), { cwd, env, timeout: 10_000 });
        return;
      } catch (err) {
        last = (err as { stderr?: string }).stderr || (err as Error).message;
      }
      if (Date.now() > deadline) throw new Error(`${c.hostname} not healthy after ${timeoutMs} ms (${argv.join(' ')}): ${last}\n${c.proc.output().slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 300));
    }
  }

  /** `docker compose stop` for one container: SIGTERM, SIGKILL after the service's stop_grace_period. */
  async stop(c: Container): Promise<number | string> {
    const grace = String((this.model.services[c.service] as { stop_grace_period?: string }).stop_grace_period ?? '10s');
    const ms = Number.parseFloat(grace) * (grace.endsWith('m') ? 60_000 : grace.endsWith('ms') ? 1 : 1000);
    return c.proc.stop(ms);
  }
}
