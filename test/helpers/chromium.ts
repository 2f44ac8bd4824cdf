// Headless Chromium (Debian's `chromium`) for the browser tests: a fresh
// profile per run, no network services of its own (sync, component updates,
// QUIC), loopback pages only. The page reports its result to the app it was
// served by; the test reads it there.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { type Proc, startProcess } from './procs.ts';
import { requireTool } from './tools.ts';

export interface Browser {
  proc: Proc;
  close(): Promise<void>;
}

export function openInChromium(url: string): Browser {
  const bin = requireTool('chromium');
  const profile = mkdtempSync(path.join(tmpdir(), 'gw-chromium-'));
  const proc = startProcess(bin, [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-dev-shm-usage',
    `--user-data-dir=${profile}`,
    // keeps the browser (and the page's WebSocket) running until the test closes it
    '--remote-debugging-port=0',
    url,
  ]);
  return {
    proc,
    async close() {
      await proc.stop(5000);
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
