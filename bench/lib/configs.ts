// The benchmark's configurations: how to start each one's processes on free
// loopback ports / Unix sockets in a temp dir, which pids make up each tier,
// and where the load goes. Every proxy and every app server runs ONE worker
// process (nginx worker_processes 1, uWSGI --processes 1, gatewire serve
// --workers 1; the Node proxies are single-process) plus its master where it
// has one — masters are counted in their tier's CPU and RSS.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { freePort, waitForListen } from '../../test/helpers/net.ts';
import { GATEWIRE_BIN, type Proc, ROOT, startProcess } from '../../test/helpers/procs.ts';
import { requireTool } from '../../test/helpers/tools.ts';

export type Group = 'rps' | 'sse' | 'idle' | 'bulk' | 'express';

export interface StartOptions {
  dir: string;
  group: Group;
  /** Extra node flags for every Node process of the configuration (e.g. --cpu-prof). */
  nodeFlags?: string[];
}

export interface Running {
  /** Where the load generator connects. */
  host: string;
  port: number;
  /** Root pid of each tier; a tier is the root and all its descendants. */
  tiers: { proxy?: number; app: number };
  stop(): Promise<void>;
  /** Output of the processes (for error reports). */
  logs(): string;
}

export interface Configuration {
  id: string;
  label: string;
  /** Workers per tier, stated in the report. */
  workers: string;
  /** 'express': runs the Express API scenarios only (and they run only on such configurations). */
  kind?: 'express';
  start(o: StartOptions): Promise<Running>;
}

const NODE = process.execPath;
const APPS = path.join(ROOT, 'bench/apps');
const TYPESCRIPT_LOADER = path.join(ROOT, 'bin/typescript-loader.js');

async function stopAll(procs: Proc[]): Promise<void> {
  // Front first, so the back end sees its clients go away like in production.
  for (const p of procs) await p.stop(5000);
}

export function nodeApp(o: StartOptions, file: string, args: string[]): Proc {
  return startProcess(NODE, [...(o.nodeFlags ?? []), '--import', TYPESCRIPT_LOADER, path.join(APPS, file), ...args], { cwd: ROOT });
}

/** The V8 flags of bin/gatewire.js's shebang: what a user who runs `gatewire` gets. */
const SHEBANG_FLAGS = (/^#!.*\bnode\b(.*)$/m.exec(readFileSync(GATEWIRE_BIN, 'utf8').split('\n')[0]!)?.[1] ?? '').split(/\s+/).filter((f) => f.startsWith('--'));
// GW_BENCH_GATEWIRE_FLAGS="..." replaces them, to measure what a flag costs or saves.
export const BIN_FLAGS = process.env.GW_BENCH_GATEWIRE_FLAGS !== undefined ? process.env.GW_BENCH_GATEWIRE_FLAGS.split(/\s+/).filter(Boolean) : SHEBANG_FLAGS;

export function gatewire(args: string[], o: StartOptions): Proc {
  // Node flags on the command line, not NODE_OPTIONS (which refuses --cpu-prof);
  // forked workers inherit them through process.execArgv.
  const nodeFlags = o.nodeFlags ?? [];
  return startProcess(NODE, [...BIN_FLAGS, ...nodeFlags, GATEWIRE_BIN, ...args], { cwd: ROOT });
}

export async function ready(proc: Proc, address: string, re = /listening/i): Promise<void> {
  await Promise.race([
    proc.waitFor(re, 30_000),
    proc.exited.then((code) => {
      throw new Error(`exited with ${code} before listening:\n${proc.output().slice(-2000)}`);
    }),
  ]);
  await waitForListen(address, 30_000);
}

async function nodeHttpApp(o: StartOptions, file = 'node-http.ts'): Promise<{ proc: Proc; port: number }> {
  const port = await freePort();
  const proc = nodeApp(o, file, [`127.0.0.1:${port}`]);
  await ready(proc, `127.0.0.1:${port}`);
  return { proc, port };
}

/** The Node peer: fastify + @fastify/reply-from in front of an HTTP app on `upstreamPort`. */
async function replyFromProxy(o: StartOptions, upstreamPort: number): Promise<{ proc: Proc; port: number }> {
  const port = await freePort();
  const proc = nodeApp(o, 'reply-from-proxy.ts', [`127.0.0.1:${port}`, `http://127.0.0.1:${upstreamPort}`]);
  try {
    await ready(proc, `127.0.0.1:${port}`);
  } catch (err) {
    await proc.stop();
    throw err;
  }
  return { proc, port };
}

function nginxConf(o: StartOptions, listenPort: number, upstream: string, location: string): string {
  const d = o.dir;
  const user = process.getuid?.() === 0 ? 'user root;\n' : '';
  return `${user}daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 20000;
pid ${d}/nginx.pid;
error_log ${d}/nginx-error.log warn;
events { worker_connections 16000; }
http {
  access_log off;
  client_body_temp_path ${d}/ngx-body;
  proxy_temp_path ${d}/ngx-proxy;
  uwsgi_temp_path ${d}/ngx-uwsgi;
  fastcgi_temp_path ${d}/ngx-fcgi;
  scgi_temp_path ${d}/ngx-scgi;
  keepalive_timeout 75s;
  keepalive_requests 1000000;
  client_max_body_size 0;
  # 1 MiB POST bodies stay in memory (the default 16k spools every body to a temp file on disk).
  client_body_buffer_size 1m;
  upstream app {
    ${upstream}
  }
  server {
    listen 127.0.0.1:${listenPort} backlog=4096;
    location / {
      ${location}
    }
  }
}
`;
}

export async function startNginx(o: StartOptions, upstream: string, location: string): Promise<{ proc: Proc; port: number }> {
  const bin = requireTool('nginx');
  const port = await freePort();
  const conf = path.join(o.dir, 'nginx.conf');
  writeFileSync(conf, nginxConf(o, port, upstream, location));
  const proc = startProcess(bin, ['-p', `${o.dir}/`, '-c', conf, '-e', `${o.dir}/nginx-error.log`]);
  try {
    await waitForListen(`127.0.0.1:${port}`, 15_000);
  } catch (err) {
    await proc.stop();
    throw new Error(`nginx did not start: ${(err as Error).message}\n${proc.output()}`);
  }
  return { proc, port };
}

async function startUwsgi(o: StartOptions): Promise<{ proc: Proc; socket: string }> {
  const bin = requireTool('uwsgi');
  const socket = path.join(o.dir, 'uwsgi.sock');
  // SSE holds 100 responses open at once: a sync WSGI worker needs a thread per stream.
  const threads = o.group === 'sse' ? ['--threads', '128'] : [];
  const proc = startProcess(bin, [
    '--plugin', 'python3', '--master', '--processes', '1', ...threads,
    '--socket', socket, '--listen', '1024', '--chdir', APPS, '--wsgi-file', path.join(APPS, 'wsgi_app.py'),
    '--need-app', '--disable-logging', '--die-on-term', '--buffer-size', '32768',
  ]);
  try {
    await waitForListen(`unix:${socket}`, 15_000);
  } catch (err) {
    await proc.stop();
    throw new Error(`uwsgi did not start: ${(err as Error).message}\n${proc.output()}`);
  }
  return { proc, socket };
}

async function startGatewireServe(o: StartOptions, listen: string, app = 'gatewire-app.ts'): Promise<Proc> {
  const proc = gatewire(['serve', path.join(APPS, app), '--listen', listen, '--workers', '1'], o);
  try {
    await ready(proc, listen);
  } catch (err) {
    await proc.stop();
    throw new Error(`gatewire serve did not start: ${(err as Error).message}`);
  }
  return proc;
}

/**
 * `gatewire proxy` with the default config but for what the bench needs (ports, limits): the access
 * log is on, as users run it, unless `accessLog: false` (the row that shows what it costs).
 * `workers` > 1 runs it as a master and that many workers (--workers).
 */
async function startGatewireProxy(o: StartOptions, protocol: 'gatewire' | 'uwsgi', address: string, accessLog = true, workers = 1): Promise<{ proc: Proc; port: number }> {
  const port = await freePort();
  const file = path.join(o.dir, 'proxy.json');
  const config = {
    listen: { host: '127.0.0.1', port },
    admin: false,
    ...(accessLog ? {} : { log: { access: false } }),
    routes: [{ match: { path_prefix: '/' }, upstream: 'app' }],
    upstreams: {
      app: {
        protocol,
        balance: 'round_robin',
        servers: [{ address }],
        // The 1 GiB upload must pass (nginx here: client_max_body_size 0).
        max_body: '4g',
        // uwsgi carries one request per connection: the default 4 would queue the
        // 64 wrk connections and the 100 SSE streams (nginx's uwsgi_pass has no cap).
        // Native connections multiplex streams: the default (4) stays.
        ...(protocol === 'uwsgi' ? { connections_per_server: 256 } : {}),
      },
    },
  };
  writeFileSync(file, JSON.stringify(config, null, 2));
  const proc = gatewire(['proxy', '--config', file, ...(workers > 1 ? ['--workers', String(workers)] : [])], o);
  try {
    await ready(proc, `127.0.0.1:${port}`);
  } catch (err) {
    await proc.stop();
    throw new Error(`gatewire proxy did not start: ${(err as Error).message}`);
  }
  return { proc, port };
}

function running(port: number, tiers: Running['tiers'], procs: Proc[]): Running {
  return {
    host: '127.0.0.1',
    port,
    tiers,
    stop: () => stopAll(procs),
    logs: () => procs.map((p) => p.output().slice(-3000)).join('\n'),
  };
}

/** Starts `back`, then `front`; stops `back` if `front` fails. */
async function chain<B extends { proc: Proc }, F extends { proc: Proc; port: number }>(
  back: () => Promise<B>,
  front: (b: B) => Promise<F>,
): Promise<Running> {
  const b = await back();
  let f: F;
  try {
    f = await front(b);
  } catch (err) {
    await b.proc.stop();
    throw err;
  }
  return running(f.port, { proxy: f.proc.child.pid!, app: b.proc.child.pid! }, [f.proc, b.proc]);
}

/**
 * gatewire proxy → gatewire serve, the appserver on a free loopback port as `gatewire up` runs it
 * (rows 2, 2q, x2, 2w), or on a Unix socket (2u: what Linux's fixed 208 KiB Unix-socket buffer costs).
 */
function gatewireStack(o: StartOptions, opts: { accessLog?: boolean; unix?: boolean; app?: string; proxyWorkers?: number } = {}): Promise<Running> {
  return chain(
    async () => {
      const addr = opts.unix ? `unix:${path.join(o.dir, 'app.sock')}` : `127.0.0.1:${await freePort()}`;
      return { proc: await startGatewireServe(o, addr, opts.app), addr };
    },
    (b) => startGatewireProxy(o, 'gatewire', b.addr, opts.accessLog ?? true, opts.proxyWorkers),
  );
}

const UWSGI_LOCATION = 'include /etc/nginx/uwsgi_params;\n      uwsgi_pass app;';
const HTTP_LOCATION = 'proxy_pass http://app;\n      proxy_http_version 1.1;\n      proxy_set_header Connection "";';

export const CONFIGURATIONS: Configuration[] = [
  {
    id: '0',
    label: 'Fastify answering itself (no upstream)',
    workers: 'fastify: 1 process',
    async start(o) {
      const port = await freePort();
      const proc = nodeApp(o, 'fastify-self.ts', [`127.0.0.1:${port}`]);
      await ready(proc, `127.0.0.1:${port}`);
      return running(port, { app: proc.child.pid! }, [proc]);
    },
  },
  {
    id: '1',
    label: 'node:http app, no proxy',
    workers: 'node:http: 1 process',
    async start(o) {
      const { proc, port } = await nodeHttpApp(o);
      return running(port, { app: proc.child.pid! }, [proc]);
    },
  },
  {
    id: '2',
    label: 'gatewire proxy → gatewire serve (native, loopback TCP)',
    workers: 'gatewire proxy: 1 process; gatewire serve: master + 1 worker',
    start: (o) => gatewireStack(o),
  },
  {
    id: '2q',
    label: 'gatewire proxy, access log off → gatewire serve (native, loopback TCP)',
    workers: 'gatewire proxy: 1 process; gatewire serve: master + 1 worker',
    start: (o) => gatewireStack(o, { accessLog: false }),
  },
  {
    id: '2u',
    label: 'gatewire proxy → gatewire serve (native, Unix socket)',
    workers: 'gatewire proxy: 1 process; gatewire serve: master + 1 worker',
    start: (o) => gatewireStack(o, { unix: true }),
  },
  {
    id: '3',
    label: 'fastify + @fastify/reply-from → node:http (HTTP/1.1 keep-alive)',
    workers: 'reply-from proxy: 1 process; node:http: 1 process',
    start: (o) =>
      chain(
        () => nodeHttpApp(o),
        (b) => replyFromProxy(o, b.port),
      ),
  },
  {
    id: '4',
    label: 'nginx proxy_pass (upstream keepalive) → node:http',
    workers: 'nginx: master + 1 worker; node:http: 1 process',
    start: (o) =>
      chain(
        () => nodeHttpApp(o),
        (b) => startNginx(o, `server 127.0.0.1:${b.port};\n    keepalive 64;`, HTTP_LOCATION),
      ),
  },
  {
    id: '5',
    label: 'nginx uwsgi_pass (Unix socket) → gatewire serve',
    workers: 'nginx: master + 1 worker; gatewire serve: master + 1 worker',
    start: (o) =>
      chain(
        async () => {
          const sock = path.join(o.dir, 'app.sock');
          return { proc: await startGatewireServe(o, `unix:${sock}`), sock };
        },
        (b) => startNginx(o, `server unix:${b.sock};`, UWSGI_LOCATION),
      ),
  },
  {
    id: '6',
    label: 'nginx uwsgi_pass (Unix socket) → uWSGI (Python WSGI)',
    workers: 'nginx: master + 1 worker; uWSGI: master + 1 process',
    start: (o) =>
      chain(
        () => startUwsgi(o),
        (b) => startNginx(o, `server unix:${b.socket};`, UWSGI_LOCATION),
      ),
  },
  {
    id: '7',
    label: 'gatewire proxy (uwsgi, Unix socket) → uWSGI (Python WSGI)',
    workers: 'gatewire proxy: 1 process; uWSGI: master + 1 process',
    start: (o) =>
      chain(
        () => startUwsgi(o),
        (b) => startGatewireProxy(o, 'uwsgi', `unix:${b.socket}`),
      ),
  },
  {
    id: 'x2',
    label: 'Express API: gatewire proxy → gatewire serve (native, loopback TCP)',
    workers: 'gatewire proxy: 1 process; gatewire serve: master + 1 worker',
    kind: 'express',
    start: (o) => gatewireStack(o, { app: 'express-api.ts' }),
  },
  {
    id: 'x3',
    label: 'Express API: fastify + @fastify/reply-from → the same module on node:http',
    workers: 'reply-from proxy: 1 process; node:http: 1 process',
    kind: 'express',
    start: (o) =>
      chain(
        () => nodeHttpApp(o, 'express-node-http.ts'),
        (b) => replyFromProxy(o, b.port),
      ),
  },
];

/**
 * `--workers N`: configuration 2 with the gatewire proxy running N workers (its master counted in
 * the proxy tier), measured next to configuration 2 in the same run. The app tier stays as in (2).
 */
export function proxyWorkersConfiguration(workers: number): Configuration {
  return {
    id: '2w',
    label: `gatewire proxy --workers ${workers} → gatewire serve (native, loopback TCP)`,
    workers: `gatewire proxy: master + ${workers} workers; gatewire serve: master + 1 worker`,
    start: (o) => gatewireStack(o, { proxyWorkers: workers }),
  };
}

/** `--configs 2,3`: "2" selects 2, 2q and 2u. */
export function selectConfigurations(filter: string | undefined, proxyWorkers?: number): Configuration[] {
  const all = proxyWorkers ? [...CONFIGURATIONS, proxyWorkersConfiguration(proxyWorkers)] : CONFIGURATIONS;
  if (!filter) return all;
  const wanted = filter.split(',').map((s) => s.trim()).filter(Boolean);
  // --workers adds (2w) to whatever --configs names, with (2) to compare it with
  const exact = proxyWorkers ? ['2', '2w'] : [];
  return all.filter((c) => exact.includes(c.id) || wanted.some((w) => c.id === w || (c.id !== '2w' && c.id.replace(/\D+$/, '') === w)));
}
