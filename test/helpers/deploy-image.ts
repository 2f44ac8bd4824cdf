// The gatewire image's file tree, rebuilt locally without Docker: the runtime
// stage of ./Dockerfile is WORKDIR /app with dist/ (from `npm run build`),
// bin/, package.json and production node_modules. Tests run the compose and
// Kubernetes commands against this tree, so they exercise the compiled code
// the container runs, not the TypeScript sources through tsx.
import { execFile } from 'node:child_process';
import { copyFileSync, cpSync, mkdirSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { tempDir } from './net.ts';
import { ROOT } from './procs.ts';

const run = promisify(execFile);

export interface ImageTree {
  /** Fake container root: container path /x/y is `${root}/x/y`. */
  root: string;
  /** The image's WORKDIR (/app). */
  app: string;
  /** Host path of a container path. */
  containerPath(p: string): string;
  /** Bind-mounts a host file at a container path (a copy: tests may rewrite it). */
  mount(hostPath: string, containerPath: string): string;
  cleanup(): void;
}

/** Runs the Dockerfile's build step (`npm run build`, output redirected into the tree) and lays out /app. */
export async function buildImageTree(): Promise<ImageTree> {
  const { dir, cleanup } = tempDir('gw-img-');
  const app = path.join(dir, 'app');
  mkdirSync(app, { recursive: true });
  try {
    await run('npm', ['run', 'build', '--', '--outDir', path.join(app, 'dist')], { cwd: ROOT, timeout: 150_000, maxBuffer: 16 << 20 });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    cleanup();
    throw new Error(`npm run build failed: ${e.message}\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
  cpSync(path.join(ROOT, 'bin'), path.join(app, 'bin'), { recursive: true });
  copyFileSync(path.join(ROOT, 'package.json'), path.join(app, 'package.json'));
  copyFileSync(path.join(ROOT, 'package-lock.json'), path.join(app, 'package-lock.json'));
  // The image has `npm ci --omit=dev`; the checkout's node_modules is a superset of it.
  symlinkSync(path.join(ROOT, 'node_modules'), path.join(app, 'node_modules'), 'dir');
  const containerPath = (p: string) => (path.isAbsolute(p) ? path.join(dir, p) : path.join(app, p));
  return {
    root: dir,
    app,
    containerPath,
    mount(hostPath, cPath) {
      const target = containerPath(cPath);
      mkdirSync(path.dirname(target), { recursive: true });
      copyFileSync(hostPath, target);
      return target;
    },
    cleanup,
  };
}
