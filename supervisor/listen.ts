// Listening addresses: parsing, stale Unix socket files (replaced at start,
// removed at exit), --chmod-socket, and the bound-but-not-listening handles
// a supervisor hands to its workers (appserver and proxy alike).
//
// This file runs in the supervisor's master, which has a few MB above a bare
// Node to spend: builtins come from process.getBuiltinModule, not `import`.
// An ES import of a builtin builds its ES module facade, which reads every
// export and so runs every lazy getter (node:util's loads parseArgs, diff,
// worker_threads…; node:fs's, fs/promises and readline): ~2 MiB for nothing.
import type { Server } from 'node:net';

const { chmodSync, lstatSync, renameSync, unlinkSync, writeFileSync } = process.getBuiltinModule('node:fs');
const net = process.getBuiltinModule('node:net');
const { getSystemErrorName } = process.getBuiltinModule('node:util');

export type ListenAddress = { kind: 'unix'; path: string; text: string } | { kind: 'tcp'; host: string; port: number; text: string };

export function parseListenAddress(text: string): ListenAddress {
  if (text.startsWith('unix:')) return { kind: 'unix', path: text.slice(5), text };
  const i = text.lastIndexOf(':');
  const host = text.slice(0, i).replace(/^\[|\]$/g, '');
  return { kind: 'tcp', host: host === '' || host === '*' ? '0.0.0.0' : host, port: Number(text.slice(i + 1)), text };
}

/** "unix:/path" or "host:port" with the port actually bound (port 0 → the kernel's choice). */
export function describeBound(addr: ListenAddress, port?: number): string {
  if (addr.kind === 'unix') return addr.text;
  const host = addr.host.includes(':') ? `[${addr.host}]` : addr.host;
  return `${host}:${port ?? addr.port}`;
}

/**
 * --bound-file: the addresses a server bound, one per line, for the process that started it on
 * port 0 (`gatewire up`), which would otherwise have to pick a free port itself and race other
 * programs for it. Written beside and renamed into place, so a reader never sees half of it.
 */
export function writeBoundFile(path: string, bound: string[]): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, `${bound.join('\n')}\n`);
  renameSync(tmp, path);
}

/** Removed before binding and after stopping: a reader never takes a previous run's port for this one's. */
export function removeBoundFile(path: string): void {
  try {
    unlinkSync(path);
  } catch {}
}

/**
 * A socket file left by a server that died without cleaning up is removed; a
 * file some live server still accepts on is not (that is an "address in
 * use" error, as for TCP); a path that is not a socket is never deleted.
 */
export async function clearStaleSocket(path: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch {
    return; // nothing there
  }
  if (!isSocket) throw new Error(`${path} exists and is not a socket: refusing to replace it`);
  const live = await new Promise<boolean>((resolve) => {
    const probe = net.connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (live) throw new Error(`${path}: another server is accepting connections on this socket`);
  unlinkSync(path);
}

export function removeSocketFile(addr: ListenAddress): void {
  if (addr.kind !== 'unix') return;
  try {
    if (lstatSync(addr.path).isSocket()) unlinkSync(addr.path);
  } catch {}
}

export function applySocketMode(addr: ListenAddress, mode: number | null): void {
  if (addr.kind === 'unix' && mode !== null) chmodSync(addr.path, mode);
}

async function resolveHost(host: string): Promise<{ address: string; family: 4 | 6 }> {
  const family = net.isIP(host);
  if (family === 4 || family === 6) return { address: host, family };
  // loaded only for a name: a master listening on addresses never pays for the resolver
  const { lookup } = process.getBuiltinModule('node:dns/promises');
  const r = await lookup(host);
  return { address: r.address, family: r.family as 4 | 6 };
}

/** A bound (not yet listening) server handle: workers call listen() on it, so they accept directly. */
export interface BoundHandle {
  addr: ListenAddress;
  handle: object;
  /** The bound port (TCP). */
  port?: number;
  close(): void;
}

interface NetInternals {
  _createServerHandle(address: string | null, port: number, addressType: number, fd?: number, flags?: number): object | number;
}

/**
 * Binds like uWSGI's and gunicorn's master: the socket is created here and
 * inherited by the workers, which all accept() on it. listen() is left to the
 * workers so that this process never accepts (and strands) a connection.
 * net._createServerHandle is what node:cluster uses for exactly this; it has
 * been stable since Node 0.x but is not documented.
 */
export async function bindHandle(addr: ListenAddress): Promise<BoundHandle> {
  const internals = net as unknown as NetInternals;
  if (typeof internals._createServerHandle !== 'function') throw new Error('this Node.js has no net._createServerHandle: use --workers 0');
  let handle: object | number;
  if (addr.kind === 'unix') {
    await clearStaleSocket(addr.path);
    handle = internals._createServerHandle(addr.path, -1, -1);
  } else {
    const { address, family } = await resolveHost(addr.host);
    handle = internals._createServerHandle(address, addr.port, family);
  }
  if (typeof handle === 'number') {
    const err = new Error(`cannot bind ${addr.text}: ${errnoName(handle)}`) as NodeJS.ErrnoException;
    err.code = errnoName(handle);
    throw err;
  }
  const h = handle as { getsockname?(out: { port?: number }): number; close(cb?: () => void): void };
  let port: number | undefined;
  if (addr.kind === 'tcp' && h.getsockname) {
    const out: { port?: number } = {};
    h.getsockname(out);
    port = out.port;
  }
  return {
    addr,
    handle,
    port,
    close: () => {
      h.close();
      removeSocketFile(addr);
    },
  };
}

function errnoName(code: number): string {
  try {
    return getSystemErrorName(code);
  } catch {
    return String(code);
  }
}

/** In-process mode: a listening net.Server on `addr`; resolves with the bound port (TCP). */
export async function listenServer(server: Server, addr: ListenAddress): Promise<number | undefined> {
  if (addr.kind === 'unix') await clearStaleSocket(addr.path);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const done = () => {
      server.off('error', reject);
      resolve();
    };
    if (addr.kind === 'unix') server.listen({ path: addr.path, backlog: 1024 }, done);
    else server.listen({ host: addr.host, port: addr.port, backlog: 1024 }, done);
  });
  const a = server.address();
  return typeof a === 'object' && a !== null ? a.port : undefined;
}
