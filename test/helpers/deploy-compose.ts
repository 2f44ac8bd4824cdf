// docker-compose.yml as Docker Compose itself reads it: `docker-compose config`
// (Debian's docker-compose, no Docker daemon needed) resolves anchors, merges,
// override files and relative paths; the tests use its normalised output.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import YAML from 'yaml';
import { ROOT } from './procs.ts';
import { requireTool } from './tools.ts';

const run = promisify(execFile);

export interface ComposeService {
  image?: string;
  build?: { context: string; dockerfile?: string };
  command?: string[] | string;
  entrypoint?: string[] | string;
  environment?: Record<string, string | null>;
  ports?: Array<{ published?: number | string; target: number; host_ip?: string; protocol?: string } | string>;
  expose?: Array<string | number>;
  volumes?: Array<string | { type: string; source: string; target: string; read_only?: boolean }>;
  depends_on?: Record<string, { condition: string }> | string[];
  deploy?: { replicas?: number };
  healthcheck?: { test: string[] | string; interval?: string; timeout?: string; retries?: number; start_period?: string };
  networks?: Record<string, unknown> | string[];
}

export interface ComposeModel {
  services: Record<string, ComposeService>;
  networks?: Record<string, { ipam?: { config?: Array<{ subnet?: string }> } } | null>;
  volumes?: Record<string, unknown>;
}

/** `docker-compose -f FILE... config`, parsed; throws with compose's own message when the file is invalid. */
export async function composeConfig(files: string[] = ['docker-compose.yml']): Promise<{ model: ComposeModel; text: string }> {
  const bin = requireTool('docker-compose');
  const args = files.flatMap((f) => ['-f', f]);
  try {
    const { stdout } = await run(bin, [...args, 'config'], {
      cwd: ROOT,
      timeout: 60_000,
      // compose reads these; keep the machine's own settings out of the result
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', COMPOSE_PROJECT_NAME: 'gatewire' },
    });
    return { model: YAML.parse(stdout) as ComposeModel, text: stdout };
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`docker-compose ${args.join(' ')} config failed: ${e.stderr || e.message}`);
  }
}

/** `command` as an argv array (compose keeps exec form as a list). */
export function argvOf(v: string[] | string | undefined): string[] {
  if (v === undefined) return [];
  return Array.isArray(v) ? v.map(String) : v.split(/\s+/).filter(Boolean);
}

/** Bind mounts of a service as { source (host path), target (container path), readOnly }. */
export function bindMounts(svc: ComposeService): Array<{ source: string; target: string; readOnly: boolean }> {
  return (svc.volumes ?? []).flatMap((v) => {
    if (typeof v === 'string') {
      const [source, target, mode] = v.split(':');
      return path.isAbsolute(source) ? [{ source, target, readOnly: mode === 'ro' }] : [];
    }
    return v.type === 'bind' ? [{ source: v.source, target: v.target, readOnly: v.read_only === true }] : [];
  });
}

/** Published host ports of a service (compose v1 normalises "8080:8080" to { published, target }). */
export function publishedPorts(svc: ComposeService): Array<{ published: number; target: number; hostIp?: string }> {
  return (svc.ports ?? []).map((p) => {
    if (typeof p === 'string') {
      const parts = p.split(':');
      return { published: Number(parts.at(-2)), target: Number(parts.at(-1)!.split('/')[0]), hostIp: parts.length > 2 ? parts[0] : undefined };
    }
    return { published: Number(p.published), target: Number(p.target), hostIp: p.host_ip };
  });
}

/** The healthcheck test as an argv (drops the CMD marker; CMD-SHELL becomes sh -c). */
export function healthcheckArgv(svc: ComposeService): string[] | null {
  const t = svc.healthcheck?.test;
  if (!t) return null;
  const arr = Array.isArray(t) ? t : ['CMD-SHELL', t];
  if (arr[0] === 'CMD') return arr.slice(1);
  if (arr[0] === 'CMD-SHELL') return ['sh', '-c', arr.slice(1).join(' ')];
  if (arr[0] === 'NONE') return null;
  return arr;
}
