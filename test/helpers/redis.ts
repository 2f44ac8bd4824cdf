// A real redis-server (Debian's) on a loopback port of its own, nothing saved to disk; stopped by
// t.after. `stop()` and `start()` again on the same port play "Redis went away and came back".
import type { TestContext } from 'node:test';
import { freePort, tempDir, waitForListen } from './net.ts';
import { type Proc, startProcess } from './procs.ts';
import { requireTool } from './tools.ts';

export interface RunningRedis {
  url: string;
  port: number;
  stop(): Promise<void>;
  start(): Promise<void>;
}

export async function startRedis(t: TestContext): Promise<RunningRedis> {
  const bin = requireTool('redis-server');
  const port = await freePort();
  const { dir, cleanup } = tempDir('gw-redis-');
  let proc: Proc | null = null;
  const start = async () => {
    proc = startProcess(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--protected-mode', 'yes'], { cwd: dir });
    await waitForListen(`127.0.0.1:${port}`, 15000).catch((err) => {
      throw new Error(`${err.message}\n${proc?.output()}`);
    });
  };
  const stop = async () => {
    await proc?.stop(3000);
    proc = null;
  };
  t.after(async () => {
    await stop();
    cleanup();
  });
  await start();
  return { url: `redis://127.0.0.1:${port}`, port, stop, start };
}
