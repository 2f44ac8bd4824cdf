// What a leak looks like from outside, without a debugger (watched by `npm run
// soak` through /status): live handles by type (sockets, timers...), heap in
// use, RSS and open file descriptors (null where /proc is absent).
import { readdirSync } from 'node:fs';

export interface ProcessStatus {
  handles: Record<string, number>;
  heapUsed: number;
  rss: number;
  fds: number | null;
}

export function processStatus(): ProcessStatus {
  const handles: Record<string, number> = {};
  for (const type of process.getActiveResourcesInfo()) handles[type] = (handles[type] ?? 0) + 1;
  const mem = process.memoryUsage();
  let fds: number | null = null;
  try {
    // minus the descriptor readdir itself opens for the listing
    fds = readdirSync('/proc/self/fd').length - 1;
  } catch {
    fds = null;
  }
  return { handles, heapUsed: mem.heapUsed, rss: mem.rss, fds };
}
