// `gatewire up`: the whole stack as one process tree, like `foreman start` for
// a Procfile. The embedded default (no config) is the quick start: one
// appserver with 2 workers serving the example app on a loopback TCP port (port 0, reported back through --bound-file)
// (or, with --unix, a Unix socket in a private runtime directory), and the
// proxy on 127.0.0.1:8080 in front of it.
//
// Why TCP by default: Linux sizes a Unix socket's send buffer once, at
// net.core.wmem_default (208 KiB), and Node cannot raise it (no SO_SNDBUF on
// net.Socket), while loopback TCP buffers grow with the traffic (tcp_wmem, up
// to 4 MiB). Through 208 KiB the appserver's 64 KiB responses and the proxy's
// uploads stall every few frames, and the two processes wake each other per
// stall instead of per batch (README, "Loopback TCP or a Unix socket", has
// the counts and figures). --unix keeps the appserver out of other local
// users' reach, at that cost.
// With --config FILE, the `apps:` section of a proxy config names the local
// appserver commands to start before the proxy (the proxy ignores `apps:`).
//
// Children run in their own process groups: a Ctrl-C in the terminal reaches
// `up` alone, and `up` forwards exactly one SIGTERM to each child in order
// (proxy first so it stops taking requests, then the appservers so in-flight
// requests finish). A second Ctrl-C kills what is left.
import { childNodeFlags } from './node-flags.ts';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AppConfig } from '../proxy/config.ts';
import { parseArgs } from 'node:util';

const USAGE = `usage: gatewire up [--config FILE] [--host HOST] [--port PORT] [--admin-port PORT] [--app MODULE] [--workers N] [--proxy-workers N|auto]

Runs the proxy and its local appserver(s) as one process tree; Ctrl-C stops them all gracefully.

  --config FILE       a proxy config with an \`apps:\` section naming the appservers to start
                      (without it: the embedded default, an appserver on a loopback port behind the proxy)
  --host HOST         proxy listen address of the embedded default (default 127.0.0.1)
  --port PORT         proxy port of the embedded default (default 8080)
  --admin-port PORT   admin port (/healthz, /metrics, /status) of the embedded default (default 9901, 0 disables)
  --app MODULE        app module of the embedded default (default: the example app)
  --workers N         appserver workers of the embedded default (default 2)
  --proxy-workers N   proxy worker processes of the embedded default, or auto (one per core); default 1
                      (with --config: workers: in the file)
  --unix              the embedded default's appserver listens on a Unix socket in a private runtime
                      directory instead of a 127.0.0.1 port: unreachable by other local users,
                      slower for large bodies (Linux gives Unix sockets a fixed 208 KiB buffer)`;

/** How long a child gets to become ready, and to exit after SIGTERM, before `up` gives up on it. */
const READY_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 40_000;

/** One local appserver as named by the `apps:` section (checked by the proxy config's schema). */
export type AppSpec = AppConfig;

interface ChildSpec {
  name: string;
  kind: 'appserver' | 'proxy';
  args: string[];
  env: NodeJS.ProcessEnv;
  /** "host:port" or "unix:/path" that accepts connections once the child is ready ('' until boundFile names it). */
  ready: string;
  /** The child's --bound-file: it listens on port 0 and `ready` is the first address it writes there. */
  boundFile?: string;
  /** Runs just before the child starts (the embedded default writes the proxy's config once the appserver's port is known). */
  beforeStart?: () => void;
}

interface Running {
  spec: ChildSpec;
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  done: boolean;
}

class UpError extends Error {}

/** The first path of `candidates` (relative to this module) that exists: source checkout or dist/ build. */
function locate(candidates: string[]): string {
  for (const c of candidates) {
    const p = fileURLToPath(new URL(c, import.meta.url));
    if (existsSync(p)) return p;
  }
  throw new UpError(`cannot find ${candidates.join(' or ')} next to ${fileURLToPath(import.meta.url)}`);
}

const gatewireBin = () => locate(['../bin/gatewire.js', '../../bin/gatewire.js']);
const exampleApp = () => locate(['../examples/hello.ts', '../examples/hello.js']);

/** The address to probe for a listen address: wildcard binds are reached on loopback. */
export function probeAddress(listen: string): string {
  if (listen.startsWith('unix:')) return listen;
  const i = listen.lastIndexOf(':');
  const host = listen.slice(0, i).replace(/^\[|\]$/g, '');
  const port = listen.slice(i + 1);
  if (host === '' || host === '0.0.0.0') return `127.0.0.1:${port}`;
  if (host === '::') return `[::1]:${port}`;
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The first address a child wrote to its --bound-file, or '' while there is none yet. */
function readBoundAddress(file: string): string {
  try {
    return probeAddress(readFileSync(file, 'utf8').split('\n')[0]);
  } catch {
    return '';
  }
}

function connectOnce(address: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = address.startsWith('unix:')
      ? net.connect(address.slice(5))
      : net.connect(Number(address.slice(address.lastIndexOf(':') + 1)), address.slice(0, address.lastIndexOf(':')).replace(/^\[|\]$/g, ''));
    sock.setTimeout(2000, () => sock.destroy());
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
    sock.once('close', () => resolve(false));
  });
}

/** The embedded default's proxy config: one route, one upstream at the appserver's address ("unix:/path" or "127.0.0.1:port"). */
export function defaultProxyConfig(opts: { host: string; port: number; adminPort: number; upstream: string; workers?: number | 'auto' }): string {
  return [
    '# Generated by `gatewire up` (the embedded default). Write your own and run `gatewire up --config FILE`.',
    `listen: { host: ${JSON.stringify(opts.host)}, port: ${opts.port} }`,
    ...(opts.workers !== undefined && opts.workers !== 1 ? [`workers: ${opts.workers}`] : []),
    opts.adminPort > 0 ? `admin: { host: "127.0.0.1", port: ${opts.adminPort} }` : 'admin: false',
    'routes:',
    '  - match: { path_prefix: "/" }',
    '    upstream: app',
    'upstreams:',
    '  app:',
    '    protocol: gatewire',
    '    servers:',
    `      - address: ${JSON.stringify(opts.upstream)}`,
    '',
  ].join('\n');
}

function appserverArgs(app: AppSpec): string[] {
  const args = ['serve', app.app];
  for (const l of app.listen) args.push('--listen', l);
  if (app.workers !== undefined) args.push('--workers', String(app.workers));
  return [...args, ...app.args];
}

function log(line: string): void {
  process.stderr.write(`gatewire up: ${line}\n`);
}

function describeExit(r: { code: number | null; signal: NodeJS.Signals | null }): string {
  return r.signal ? `killed by ${r.signal}` : `exit code ${r.code}`;
}

/** Starts, watches and stops the children; all process-tree policy lives here. */
class Supervisor {
  readonly running: Running[] = [];
  private stopping = false;
  private failure: Promise<Running>;
  private fail!: (r: Running) => void;
  private readonly killAll = () => {
    for (const r of this.running) if (!r.done) r.child.kill('SIGKILL');
  };

  private readonly bin: string;
  constructor(bin: string) {
    this.bin = bin;
    this.failure = new Promise((resolve) => {
      this.fail = resolve;
    });
    // Last resort if `up` itself dies (uncaught error): never leave children behind.
    process.once('exit', this.killAll);
  }

  start(spec: ChildSpec): Running {
    const child = spawn(process.execPath, [...childNodeFlags(), this.bin, ...spec.args], {
      stdio: ['ignore', 'inherit', 'inherit'],
      env: spec.env,
      detached: true,
    });
    const r: Running = {
      spec,
      child,
      done: false,
      exited: new Promise((resolve) => {
        child.once('exit', (code, signal) => {
          r.done = true;
          resolve({ code, signal });
        });
        child.once('error', (err) => {
          log(`cannot start ${spec.name}: ${err.message}`);
          r.done = true;
          resolve({ code: 127, signal: null });
        });
      }),
    };
    r.exited.then(() => {
      if (!this.stopping) this.fail(r);
    });
    this.running.push(r);
    return r;
  }

  /** A promise that resolves when some child exits while we are not stopping. */
  unexpectedExit(): Promise<Running> {
    return this.failure;
  }

  async waitReady(r: Running): Promise<void> {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    const boundFile = r.spec.boundFile;
    while (boundFile !== undefined && r.spec.ready === '' && !r.done) {
      r.spec.ready = readBoundAddress(boundFile);
      if (r.spec.ready !== '') break;
      if (Date.now() > deadline) throw new UpError(`${r.spec.name} did not report its address in ${boundFile} within ${READY_TIMEOUT_MS / 1000} s`);
      await new Promise((res) => setTimeout(res, 50));
    }
    while (!r.done) {
      if (await connectOnce(r.spec.ready)) return;
      if (Date.now() > deadline) throw new UpError(`${r.spec.name} did not accept connections on ${r.spec.ready} within ${READY_TIMEOUT_MS / 1000} s`);
      await new Promise((res) => setTimeout(res, 100));
    }
    const how = await r.exited;
    throw new UpError(`${r.spec.name} exited before it was ready (${describeExit(how)})`);
  }

  /** SIGTERM each child in reverse start order (proxy first), waiting for each; SIGKILL after STOP_TIMEOUT_MS. Resolves true if all exited 0. */
  async stopAll(): Promise<boolean> {
    this.stopping = true;
    let clean = true;
    for (const r of [...this.running].reverse()) {
      if (!r.done) r.child.kill('SIGTERM');
      const timer = setTimeout(() => {
        if (!r.done) {
          log(`${r.spec.name} did not exit ${STOP_TIMEOUT_MS / 1000} s after SIGTERM; killing it`);
          r.child.kill('SIGKILL');
        }
      }, STOP_TIMEOUT_MS);
      const how = await r.exited;
      clearTimeout(timer);
      // Killed by the SIGTERM we sent is a clean stop too: a child stopped during its startup has no handler yet.
      if (how.code !== 0 && how.signal !== 'SIGTERM') {
        clean = false;
        if (!this.failed.has(r)) log(`${r.spec.name} did not stop cleanly (${describeExit(how)})`);
      }
    }
    process.removeListener('exit', this.killAll);
    return clean;
  }

  /** Children already reported as failed (not reported twice). */
  readonly failed = new Set<Running>();

  forceKill(): void {
    this.stopping = true;
    this.killAll();
  }
}

interface Plan {
  children: ChildSpec[];
  url: string;
  cleanup: () => void;
  /** Runs before a SIGHUP is passed on to the children. */
  beforeReload?: () => void;
}

function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...process.env, ...extra };
}

async function planDefault(values: Record<string, string | boolean | undefined>): Promise<Plan> {
  const port = parsePort(values.port, 'port', 8080);
  const adminPort = parsePort(values['admin-port'], 'admin-port', 9901, true);
  const host = (values.host as string | undefined) ?? '127.0.0.1';
  const workers = values.workers === undefined ? 2 : Number(values.workers);
  if (!Number.isInteger(workers) || workers < 1) throw new UpError(`--workers must be an integer >= 1, got "${values.workers}"`);
  const pw = values['proxy-workers'];
  const proxyWorkers = pw === undefined ? 1 : pw === 'auto' ? 'auto' : Number(pw);
  if (proxyWorkers !== 'auto' && !(Number.isInteger(proxyWorkers) && proxyWorkers >= 1)) throw new UpError(`--proxy-workers must be an integer >= 1 or auto, got "${pw}"`);
  const app = (values.app as string | undefined) ?? exampleApp();
  if (!existsSync(app)) throw new UpError(`--app ${app}: no such file`);
  const runtimeDir = mkdtempSync(path.join(process.env.XDG_RUNTIME_DIR && existsSync(process.env.XDG_RUNTIME_DIR) ? process.env.XDG_RUNTIME_DIR : os.tmpdir(), 'gatewire-'));
  const cleanup = () => rmSync(runtimeDir, { recursive: true, force: true });
  // On TCP the appserver binds port 0 and reports the port the kernel gave it (--bound-file):
  // a port picked here and bound later could be taken by another program in between.
  const unix = values.unix === true;
  const appListen = unix ? `unix:${path.join(runtimeDir, 'app.sock')}` : '127.0.0.1:0';
  const boundFile = unix ? undefined : path.join(runtimeDir, 'app.bound');
  const appserver: ChildSpec = {
    name: 'appserver "app"',
    kind: 'appserver',
    args: [...appserverArgs({ name: 'app', app, listen: [appListen], workers, env: {}, args: [] }), ...(boundFile === undefined ? [] : ['--bound-file', boundFile])],
    env: childEnv(),
    ready: unix ? appListen : '',
    boundFile,
  };
  const configFile = path.join(runtimeDir, 'gatewire.yaml');
  const listen = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  return {
    children: [
      appserver,
      {
        name: 'proxy',
        kind: 'proxy',
        args: ['proxy', '--config', configFile],
        env: childEnv(),
        ready: probeAddress(listen),
        beforeStart: () => writeFileSync(configFile, defaultProxyConfig({ host, port, adminPort, upstream: appserver.ready, workers: proxyWorkers })),
      },
    ],
    url: `http://${probeAddress(listen)}/`,
    cleanup,
  };
}

async function planFromConfig(file: string): Promise<Plan> {
  const read = (): string => {
    try {
      return readFileSync(file, 'utf8');
    } catch (err) {
      throw new UpError(`cannot read ${file}: ${(err as Error).message}`);
    }
  };
  const text = read();
  // One parse for the whole file, `apps:` included (the proxy's schema and problem reporter):
  // nothing starts on a bad config, like nginx -t.
  const { ConfigError, parseConfig } = await import('../proxy/config.ts');
  let apps: AppSpec[];
  let listen: { host: string; port: number };
  try {
    const config = parseConfig(text, file);
    apps = config.apps;
    listen = config.listen;
  } catch (err) {
    if (err instanceof ConfigError) throw new UpError(err.message);
    throw err;
  }
  const hostPort = listen.host.includes(':') ? `[${listen.host}]:${listen.port}` : `${listen.host}:${listen.port}`;
  return {
    children: [
      ...apps.map(
        (a): ChildSpec => ({
          name: `appserver "${a.name}"`,
          kind: 'appserver',
          args: appserverArgs(a),
          env: childEnv(a.env),
          ready: probeAddress(a.listen[0]),
        }),
      ),
      { name: 'proxy', kind: 'proxy', args: ['proxy', '--config', file], env: childEnv(), ready: probeAddress(hostPort) },
    ],
    url: `http://${probeAddress(hostPort)}/`,
    cleanup: () => {},
  };
}

function parsePort(v: string | boolean | undefined, name: string, dflt: number, allowZero = false): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < (allowZero ? 0 : 1) || n > 65535) throw new UpError(`--${name} must be a port number, got "${v}"`);
  return n;
}

export async function runUp(argv: string[]): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        config: { type: 'string', short: 'c' },
        host: { type: 'string' },
        port: { type: 'string', short: 'p' },
        'admin-port': { type: 'string' },
        app: { type: 'string' },
        workers: { type: 'string', short: 'w' },
        'proxy-workers': { type: 'string' },
        unix: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    process.stderr.write(`gatewire up: ${(err as Error).message}\n\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (values.config !== undefined) {
    const clash = ['host', 'port', 'admin-port', 'app', 'workers', 'proxy-workers', 'unix'].filter((k) => values[k] !== undefined);
    if (clash.length > 0) {
      process.stderr.write(`gatewire up: --${clash[0]} applies to the embedded default only; with --config, set it in ${values.config}\n`);
      return 2;
    }
  }

  let plan: Plan;
  try {
    plan = values.config !== undefined ? await planFromConfig(values.config as string) : await planDefault(values);
  } catch (err) {
    if (err instanceof UpError) {
      process.stderr.write(`gatewire up: ${err.message}\n`);
      return 1;
    }
    throw err;
  }

  const sup = new Supervisor(gatewireBin());
  let signalled: NodeJS.Signals | null = null;
  let onSignal!: (sig: NodeJS.Signals) => void;
  const stopRequested = new Promise<NodeJS.Signals>((resolve) => {
    onSignal = (sig) => {
      if (signalled) {
        log(`second ${sig}: killing everything now`);
        sup.forceKill();
        return;
      }
      signalled = sig;
      log(`${sig} received, stopping (Ctrl-C again to kill)`);
      resolve(sig);
    };
  });
  // SIGHUP is passed on: the proxy reloads its config, appservers do a rolling reload of their workers.
  const onHangup = () => {
    log('SIGHUP received, passing it on (proxy: reload config, appservers: rolling reload)');
    plan.beforeReload?.();
    for (const r of sup.running) if (!r.done) r.child.kill('SIGHUP');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onHangup);

  let code = 0;
  try {
    type Outcome = { kind: 'ready' } | { kind: 'signal' } | { kind: 'died'; r: Running } | { kind: 'error'; err: Error };
    const startAll = async (): Promise<Outcome> => {
      try {
        for (const spec of plan.children) {
          if (signalled) return { kind: 'signal' };
          spec.beforeStart?.();
          // Readiness is "accepts connections": make sure it is not another program that accepts them.
          if (spec.ready !== '' && (await connectOnce(spec.ready))) throw new UpError(`${spec.name} cannot listen on ${spec.ready}: another program already accepts connections there`);
          const r = sup.start(spec);
          await sup.waitReady(r);
        }
        return { kind: 'ready' };
      } catch (err) {
        return { kind: 'error', err: err as Error };
      }
    };
    const died = sup.unexpectedExit().then((r): Outcome => ({ kind: 'died', r }));
    const stopped = stopRequested.then((): Outcome => ({ kind: 'signal' }));
    let outcome = await Promise.race([startAll(), died, stopped]);
    if (outcome.kind === 'ready') {
      process.stdout.write(`gatewire is up: open ${plan.url}\n`);
      outcome = await Promise.race([died, stopped]);
    }
    if (outcome.kind === 'died') {
      const how = await outcome.r.exited;
      sup.failed.add(outcome.r);
      log(`${outcome.r.spec.name} exited unexpectedly (${describeExit(how)}); stopping the rest`);
      code = 1;
    } else if (outcome.kind === 'error') {
      log(`${outcome.err.message}; stopping the rest`);
      code = 1;
    }
    const clean = await sup.stopAll();
    if (!clean && code === 0) code = 1;
    if (code === 0) log('stopped');
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    process.removeListener('SIGHUP', onHangup);
    plan.cleanup();
  }
  return code;
}
