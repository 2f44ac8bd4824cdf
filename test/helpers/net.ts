// Loopback-only helpers shared by the tests: free ports, temp dirs, waiting for a listener.
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

/** A TCP port free on 127.0.0.1 right now (the kernel picks it). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  // The kernel may hand a just-closed port out again: two calls for one config (listen and admin)
  // once got the same port in CI. A port this process handed out already is never returned twice.
  for (let i = 0; i < 20; i++) {
    const port = await probePort(host);
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error('freePort: no port not handed out before in 20 tries');
}

const handedOut = new Set<number>();

function probePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** A fresh temp directory removed by the returned cleanup. Unix socket paths must stay short: keep names brief. */
export function tempDir(prefix = 'gw-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Resolves once `address` ("host:port" or "unix:/path") accepts a connection; bounded by `timeoutMs`. */
export async function waitForListen(address: string, timeoutMs = 15000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const sock = address.startsWith('unix:')
        ? net.connect(address.slice(5))
        : net.connect(Number(address.slice(address.lastIndexOf(':') + 1)), address.slice(0, address.lastIndexOf(':')).replace(/^\[|\]$/g, ''));
      sock.once('connect', () => {
        sock.destroy();
        resolve(true);
      });
      sock.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${address} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
