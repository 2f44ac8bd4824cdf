// Real processes for the tests: each spawned child is killed when the test
// process exits, and its output is kept so a failing test can show it.
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const GATEWIRE_BIN = path.join(ROOT, 'bin/gatewire.js');

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

export interface Proc {
  child: ChildProcess;
  /** stdout + stderr so far. */
  output(): string;
  /** Resolves when the output matches `re` (bounded by timeoutMs). */
  waitFor(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** Resolves with the exit code (or signal name) once the process has ended. */
  exited: Promise<number | string>;
  kill(signal?: NodeJS.Signals): void;
  /** SIGTERM, then SIGKILL after graceMs; resolves when gone. */
  stop(graceMs?: number): Promise<number | string>;
}

export function startProcess(command: string, args: string[], opts: SpawnOptions = {}): Proc {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  live.add(child);
  let out = '';
  const waiters: Array<() => void> = [];
  const onData = (d: Buffer) => {
    out += d.toString();
    if (out.length > 4_000_000) out = out.slice(-2_000_000);
    for (const w of waiters.splice(0)) w();
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => {
      live.delete(child);
      for (const w of waiters.splice(0)) w();
      resolve(code ?? signal ?? -1);
    });
  });
  let done = false;
  exited.then(() => {
    done = true;
  });
  const proc: Proc = {
    child,
    output: () => out,
    exited,
    kill: (signal = 'SIGTERM') => {
      if (!done) child.kill(signal);
    },
    waitFor(re, timeoutMs = 15000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${re} in output of ${command}:\n${out.slice(-4000)}`)), timeoutMs);
        const check = () => {
          const m = out.match(re);
          if (m) {
            clearTimeout(timer);
            resolve(m);
          } else if (done) {
            clearTimeout(timer);
            reject(new Error(`${command} exited before printing ${re}:\n${out.slice(-4000)}`));
          } else waiters.push(check);
        };
        check();
      });
    },
    async stop(graceMs = 5000) {
      if (done) return exited;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const r = await exited;
      clearTimeout(t);
      return r;
    },
  };
  return proc;
}

/** `gatewire <args>` from this checkout. */
export function startGatewire(args: string[], opts: SpawnOptions = {}): Proc {
  return startProcess(process.execPath, [GATEWIRE_BIN, ...args], { cwd: ROOT, ...opts });
}
