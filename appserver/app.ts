// Loading APP_MODULE and deciding which interface it speaks: a Fetch handler
// (default export with fetch(request, info), or a function of one Request) or
// a Node listener (req, res) such as an Express app.
import { Server as HttpServer } from 'node:http';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Vars } from '../protocol/vars.ts';
import type { AppInterface } from './options.ts';
import type { UpgradeWebSocketOptions, UpgradeWebSocketResult } from './websocket.ts';

export interface RemoteAddr {
  hostname: string;
  port: number;
  transport: 'tcp';
}

/** Second argument of a Fetch handler, the way Deno's serve() passes it. */
export interface ServeInfo {
  remoteAddr: RemoteAddr;
  /** The raw uwsgi/gatewire vars of the request, for those who need them. */
  vars: Vars;
  /** Deno.upgradeWebSocket's shape: return `response` from the handler, talk on `socket`. Throws unless the request is a WebSocket upgrade. */
  upgradeWebSocket: (request: Request, opts?: UpgradeWebSocketOptions) => UpgradeWebSocketResult;
}

export type FetchHandler = (request: Request, info: ServeInfo) => Response | Promise<Response>;
export type NodeListener = (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => unknown;

/** `server`: the app exported an http.Server it did not listen() on; its 'request' and 'upgrade' events are delivered. */
export type LoadedApp = { kind: 'fetch'; fetch: FetchHandler; name: string } | { kind: 'node'; listener: NodeListener; name: string; server?: HttpServer };

export class AppLoadError extends Error {}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'function') return `a function of ${value.length} parameter(s)${value.name ? ` named ${value.name}` : ''}`;
  if (typeof value === 'object') {
    const keys = Object.keys(value as object).slice(0, 8);
    return `an object with keys [${keys.join(', ')}]`;
  }
  return `a ${typeof value}`;
}

/**
 * Decides from the export: an object with fetch() → fetch; a function with
 * two or more parameters, or Express's (app.handle/app.listen markers) → node;
 * a function of one parameter → fetch. `--interface` overrides the guess.
 */
export function resolveApp(mod: Record<string, unknown>, name: string, forced: AppInterface): LoadedApp {
  const candidate = mod.default ?? mod.app ?? mod.fetch;
  const exported = Object.keys(mod);
  if (candidate === undefined || candidate === null) {
    throw new AppLoadError(`${name}: no default export (found exports: [${exported.join(', ') || 'none'}]); export a Fetch handler ({ fetch(request) } or (request) => Response) or a Node listener ((req, res) => void, e.g. an Express app)`);
  }
  if (candidate instanceof HttpServer && forced !== 'fetch') {
    // ws (WebSocketServer({ server })) and socket.io (new Server(server)) attach to the server's
    // events, and socket.io replaces its 'request' listeners: emit, never call a listener directly.
    const server = candidate;
    if (server.listening) throw new AppLoadError(`${name}: the exported http.Server is already listening; export it without calling listen() (gatewire serve delivers its requests)`);
    return { kind: 'node', listener: (req, res) => server.emit('request', req, res), server, name };
  }
  const hasFetch = typeof candidate === 'object' || typeof candidate === 'function' ? typeof (candidate as { fetch?: unknown }).fetch === 'function' : false;
  if (forced === 'fetch') {
    if (hasFetch) {
      const obj = candidate as { fetch: FetchHandler };
      return { kind: 'fetch', fetch: obj.fetch.bind(obj), name };
    }
    if (typeof candidate === 'function') return { kind: 'fetch', fetch: candidate as FetchHandler, name };
    throw new AppLoadError(`${name}: --interface fetch needs a default export with a fetch() method or a function, found ${describe(candidate)}`);
  }
  if (forced === 'node') {
    if (typeof candidate === 'function') return { kind: 'node', listener: candidate as NodeListener, name };
    throw new AppLoadError(`${name}: --interface node needs a default export that is a (req, res) function, found ${describe(candidate)}`);
  }
  if (hasFetch) {
    const obj = candidate as { fetch: FetchHandler };
    return { kind: 'fetch', fetch: obj.fetch.bind(obj), name };
  }
  if (typeof candidate === 'function') {
    const fn = candidate as Function & { handle?: unknown; listen?: unknown };
    const looksExpress = typeof fn.handle === 'function' && typeof fn.listen === 'function';
    if (looksExpress || fn.length >= 2) return { kind: 'node', listener: candidate as NodeListener, name };
    return { kind: 'fetch', fetch: candidate as FetchHandler, name };
  }
  throw new AppLoadError(`${name}: the default export is ${describe(candidate)}; expected a Fetch handler ({ fetch(request) } or (request) => Response) or a Node listener ((req, res) => void, e.g. an Express app)`);
}

/**
 * Node 22.18+ runs an app's TypeScript itself when its syntax is erasable; an
 * app that uses enums, namespaces, parameter properties or decorators is
 * handed to tsx instead (loaded only then, and through its own namespace, so
 * the rest of the process carries no loader).
 */
async function importApp(url: string): Promise<Record<string, unknown>> {
  try {
    return await import(url);
  } catch (err) {
    if ((err as { code?: string }).code !== 'ERR_UNSUPPORTED_TYPESCRIPT_SYNTAX') throw err;
    // tsx is an optional dependency: the production image leaves it out
    const { tsImport } = await import('tsx/esm/api').catch((e: { code?: string }) => {
      if (e.code !== 'ERR_MODULE_NOT_FOUND') throw e;
      throw new AppLoadError(`${url}: ${(err as Error).message}; compile the app to JavaScript, or install tsx (npm install tsx) to run it as is`);
    });
    const mod = (await tsImport(url, import.meta.url)) as Record<string, unknown>;
    // tsx compiles a file outside a "type": "module" package as CommonJS, whose
    // exports object then arrives as the namespace's default.
    const cjs = mod.default as Record<string, unknown> | undefined;
    return cjs !== null && typeof cjs === 'object' && '__esModule' in cjs ? cjs : mod;
  }
}

export async function loadApp(modulePath: string, forced: AppInterface): Promise<LoadedApp> {
  const url = /^[a-z]+:/i.test(modulePath) && !/^[a-z]:[\\/]/i.test(modulePath) ? modulePath : pathToFileURL(path.resolve(modulePath)).href;
  let mod: Record<string, unknown>;
  try {
    mod = await importApp(url);
  } catch (err) {
    if (err instanceof AppLoadError) throw err;
    const e = err as Error & { code?: string };
    if (e.code === 'ERR_MODULE_NOT_FOUND' && String(e.message).includes(path.resolve(modulePath))) {
      throw new AppLoadError(`${modulePath}: module not found`);
    }
    if (e.code === 'ERR_REQUIRE_CYCLE_MODULE' || e.code === 'ERR_REQUIRE_ESM') {
      // tsx compiles a .ts/.js file as CommonJS unless the nearest package.json says "type": "module";
      // an ES module (export default ...) then fails with this unhelpful cycle error.
      throw new AppLoadError(
        `${modulePath}: failed to load: it is an ES module (export/import) but is loaded as CommonJS; add "type": "module" to the nearest package.json, or name the file .mts/.mjs`,
      );
    }
    throw new AppLoadError(`${modulePath}: failed to load: ${e.stack ?? e}`);
  }
  return resolveApp(mod, modulePath, forced);
}
