// A Docker engine of the test's own: Debian's dockerd (20.10) with its data
// root, exec root, pidfile and API socket in a temp dir, so it shares nothing
// with another engine on the machine, and removed with everything in it at the
// end, pass or fail. It leaves the host's network alone: no docker0 bridge
// (--bridge=none), no iptables rules and no change to ip_forward (Docker would
// otherwise set the FORWARD policy to DROP for every other test). What the
// compose tests need still works without them: containers of one compose
// network talk over its bridge, a port published on 127.0.0.1 goes through
// docker-proxy, and image builds use the host's network (build.network: host,
// in the compose override of the test).
// No registry is reachable here: the base images are the local stand-ins of
// shared/docker/local-base-images.sh (it caches its debootstrap and npm
// tarballs in /tmp/gw-docker/base, so only the first run on a machine pays the
// debootstrap).
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { ROOT } from './procs.ts';
import { requireTool } from './tools.ts';

const run = promisify(execFile);

export interface Engine {
  /** Environment for docker and docker-compose: DOCKER_HOST of this engine, the matching client first on PATH, the legacy builder. */
  env: NodeJS.ProcessEnv;
  dir: string;
  docker(args: string[], timeoutMs?: number): Promise<string>;
  /** Removes every container of this engine, stops dockerd (SIGKILL after 30 s) and deletes its directory. */
  stop(): Promise<void>;
}

/** shared/docker beside the clone (CI: ../shared, read-only), or GATEWIRE_SHARED_DIR. */
export function sharedDockerDir(): string {
  const candidates = [process.env.GATEWIRE_SHARED_DIR, path.resolve(ROOT, '../shared'), '/work/shared'].filter(Boolean) as string[];
  for (const c of candidates) if (existsSync(path.join(c, 'docker/local-base-images.sh'))) return path.join(c, 'docker');
  throw new Error(`shared/docker/local-base-images.sh not found in ${candidates.join(', ')}: it builds the base images (no registry here)`);
}

function exited(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('exit', () => resolve())));
}

export async function startEngine(): Promise<Engine> {
  const dockerd = requireTool('dockerd');
  requireTool('containerd');
  requireTool('runc');
  if (process.getuid?.() !== 0) throw new Error('dockerd needs root: run the suite as root (CI does)');
  const client = existsSync('/usr/bin/docker') ? '/usr/bin/docker' : requireTool('docker');
  // short: the API socket path must fit in sun_path
  const dir = mkdtempSync('/tmp/gw-dk-');
  const sock = path.join(dir, 'docker.sock');
  const log = openSync(path.join(dir, 'dockerd.log'), 'a');
  const child = spawn(
    dockerd,
    [
      '--data-root', path.join(dir, 'data'),
      '--exec-root', path.join(dir, 'exec'),
      '--pidfile', path.join(dir, 'dockerd.pid'),
      '--host', `unix://${sock}`,
      '--bridge=none',
      '--iptables=false',
      '--ip-forward=false',
      '--ip-masq=false',
    ],
    { stdio: ['ignore', log, log] },
  );
  // Last resort when the test process dies without running its after hooks: no engine outlives it.
  const onExit = () => child.kill('SIGKILL');
  process.once('exit', onExit);
  const env: NodeJS.ProcessEnv = {
    PATH: `${path.dirname(client)}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}`,
    HOME: process.env.HOME ?? '/root',
    DOCKER_HOST: `unix://${sock}`,
    DOCKER_BUILDKIT: '0',
    COMPOSE_DOCKER_CLI_BUILD: '1',
  };
  const docker = async (args: string[], timeoutMs = 120_000) => (await run(client, args, { env, timeout: timeoutMs, maxBuffer: 64 << 20 })).stdout;
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    process.off('exit', onExit);
    // A user-defined network's bridge (br-<id>) outlives dockerd: left behind, its subnet's route
    // would capture the next engine's traffic to the same compose subnet.
    const bridges: string[] = [];
    if (child.exitCode === null) {
      const ids = (await docker(['ps', '-aq'], 30_000).catch(() => '')).split('\n').filter(Boolean);
      if (ids.length > 0) await docker(['rm', '-f', '-v', ...ids], 60_000).catch(() => {});
      const networks = (await docker(['network', 'ls', '-q', '--filter', 'type=custom'], 30_000).catch(() => '')).split('\n').filter(Boolean);
      for (const id of networks) bridges.push(`br-${id.slice(0, 12)}`);
      if (networks.length > 0) await docker(['network', 'rm', ...networks], 60_000).catch(() => {});
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await exited(child);
      clearTimeout(t);
    }
    // dockerd's own containerd normally leaves with it; after a SIGKILL it may not.
    const ctrPid = Number(readIfExists(path.join(dir, 'exec/containerd/containerd.pid')));
    if (ctrPid > 0 && isAlive(ctrPid) && cmdlineOf(ctrPid).includes(dir)) process.kill(ctrPid, 'SIGKILL');
    // Mounts left below the directory (overlay layers, netns, shm) must go before it can be deleted.
    const mounts = readFileSync('/proc/self/mounts', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[1])
      .filter((m) => m?.startsWith(`${dir}/`))
      .reverse();
    for (const m of mounts) await run('umount', ['-l', m]).catch(() => {});
    for (const b of bridges) if (existsSync(`/sys/class/net/${b}`)) await run('ip', ['link', 'delete', b]).catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`dockerd exited with ${child.exitCode}:\n${readIfExists(path.join(dir, 'dockerd.log')).slice(-3000)}`);
      const ok = await docker(['version', '--format', '{{.Server.Version}}'], 10_000).then(
        () => true,
        () => false,
      );
      if (ok) break;
      if (Date.now() > deadline) throw new Error(`dockerd did not answer on ${sock} within 60 s:\n${readIfExists(path.join(dir, 'dockerd.log')).slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 300));
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { env, dir, docker, stop };
}

/** debian:bookworm-slim and node:24-slim built locally into `engine` (no registry here). */
export async function buildBaseImages(engine: Engine): Promise<void> {
  const script = path.join(sharedDockerDir(), 'local-base-images.sh');
  try {
    await run('bash', [script], { env: { ...engine.env, PATH: `${engine.env.PATH}:/usr/sbin:/sbin` }, timeout: 1_200_000, maxBuffer: 64 << 20 });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${script} failed: ${e.stderr?.slice(-3000) || e.message}`);
  }
}

function readIfExists(p: string): string {
  try {
    return readFileSync(p, 'utf8');
  } catch {
    return '';
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function cmdlineOf(pid: number): string {
  return readIfExists(`/proc/${pid}/cmdline`).replaceAll('\0', ' ');
}
