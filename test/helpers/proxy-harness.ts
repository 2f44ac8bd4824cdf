// Real processes for the proxy tests: gatewire appservers running a small app
// that says who it is, node:http backends, Flask under uWSGI or gunicorn, and
// the proxy itself (`gatewire proxy --config FILE`). Everything listens on
// loopback or on Unix sockets in a temp dir, and is stopped by t.after.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { Agent, request } from 'undici';
import { freePort, tempDir, waitForListen } from './net.ts';
import { type Proc, startGatewire, startProcess } from './procs.ts';
import { requireTool } from './tools.ts';

/** A Fetch app for `gatewire serve`: answers who it is and what it received. */
export const WHOAMI_APP = `
const NAME = process.env.NAME ?? 'app';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export default {
  async fetch(req, info) {
    const url = new URL(req.url);
    const p = url.pathname;
    if (p === '/sse') {
      let i = 0;
      const n = Number(url.searchParams.get('n') ?? 3);
      const gap = Number(url.searchParams.get('gap') ?? 400);
      const body = new ReadableStream({
        async pull(c) {
          if (i > 0) await sleep(gap);
          if (i >= n) { c.close(); return; }
          c.enqueue(new TextEncoder().encode('data: ' + (i++) + '\\n\\n'));
        },
      });
      return new Response(body, { headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' } });
    }
    if (p === '/slow') {
      await sleep(Number(url.searchParams.get('ms') ?? 1000));
      return new Response(NAME);
    }
    if (p === '/head-then-hang') {
      const body = new ReadableStream({ start(c) { c.enqueue(new TextEncoder().encode('first chunk\\n')); } });
      return new Response(body, { headers: { 'content-type': 'text/plain' } });
    }
    if (p === '/healthz') return new Response('ok');
    let bodyLen = 0;
    if (req.body) bodyLen = (await req.arrayBuffer()).byteLength;
    const vars = {};
    const v = info?.vars ?? [];
    for (let i = 0; i < v.length; i += 2) vars[v[i]] = v[i + 1];
    return Response.json({ name: NAME, path: p, query: url.search, method: req.method, bodyLen, headers: Object.fromEntries(req.headers), vars });
  },
};
`;

/** The same contract for node:http backends (one process, so SIGSTOP/SIGKILL hit the server itself). */
export const NODE_BACKEND = `
import http from 'node:http';
const NAME = process.env.NAME ?? 'node';
const [host, port] = [process.env.HOST ?? '127.0.0.1', Number(process.env.PORT)];
const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  let n = 0;
  req.on('data', (c) => { n += c.length; });
  req.on('end', () => {
    if (url.pathname === '/slow') {
      setTimeout(() => res.end(NAME), Number(url.searchParams.get('ms') ?? 1000));
      return;
    }
    if (url.pathname === '/head-then-hang') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first chunk\\n');
      return;
    }
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ name: NAME, path: url.pathname, query: url.search, method: req.method, bodyLen: n, headers: req.headers, peerPort: req.socket.remotePort }));
  });
});
server.keepAliveTimeout = 60000;
server.listen(port, host, () => console.log('backend ' + NAME + ' listening on ' + host + ':' + port));
`;

export const FLASK_APP = `
import os, time
from flask import Flask, request, jsonify, Response

app = Flask(__name__)
NAME = os.environ.get('NAME', 'flask')

@app.route('/stream')
def stream():
    def gen():
        for i in range(3):
            yield 'part %d\\n' % i
            time.sleep(0.3)
    return Response(gen(), mimetype='text/plain')

@app.route('/', defaults={'p': ''}, methods=['GET', 'POST', 'PUT', 'DELETE', 'HEAD'])
@app.route('/<path:p>', methods=['GET', 'POST', 'PUT', 'DELETE', 'HEAD'])
def anything(p):
    body = request.get_data()
    env = {k: str(v) for k, v in request.environ.items() if k.isupper()}
    resp = jsonify(name=NAME, path=request.path, query=request.query_string.decode('latin1'), method=request.method,
                   bodyLen=len(body), bodySum=sum(body) % 65536, headers=dict(request.headers), environ=env)
    resp.set_cookie('a', '1')
    resp.set_cookie('b', '2')
    return resp
`;

export interface Backend {
  name: string;
  /** As written in the proxy config: "127.0.0.1:PORT" or "unix:/path". */
  address: string;
  proc: Proc;
}

function scratch(t: TestContext): string {
  const { dir, cleanup } = tempDir('gwp-');
  t.after(cleanup);
  return dir;
}

/** `gatewire serve` running WHOAMI_APP; workers 0 keeps it one process (kill/stop hit the server). */
export async function startAppserver(t: TestContext, name: string, opts: { unix?: boolean; workers?: number; dir?: string } = {}): Promise<Backend> {
  const dir = opts.dir ?? scratch(t);
  const app = path.join(dir, 'whoami.mjs');
  writeFileSync(app, WHOAMI_APP);
  const address = opts.unix ? `unix:${path.join(dir, `${name}.sock`)}` : `127.0.0.1:${await freePort()}`;
  const proc = startGatewire(['serve', app, '--listen', address, '--workers', String(opts.workers ?? 0), '--log-level', 'warn'], {
    env: { ...process.env, NAME: name },
  });
  t.after(() => proc.stop(3000));
  await proc.waitFor(/listening on/, 20000);
  await waitForListen(address);
  return { name, address, proc };
}

export async function startNodeBackend(t: TestContext, name: string, dir?: string): Promise<Backend> {
  const d = dir ?? scratch(t);
  const file = path.join(d, 'backend.mjs');
  writeFileSync(file, NODE_BACKEND);
  const port = await freePort();
  const proc = startProcess(process.execPath, [file], { env: { ...process.env, NAME: name, PORT: String(port) } });
  t.after(() => {
    proc.kill('SIGCONT');
    return proc.stop(2000);
  });
  await proc.waitFor(/listening on/, 10000);
  return { name, address: `127.0.0.1:${port}`, proc };
}

/** Flask under a real uWSGI speaking uwsgi classic on a TCP port or a Unix socket. */
export async function startUwsgiFlask(t: TestContext, name: string, opts: { unix?: boolean } = {}): Promise<Backend> {
  const uwsgi = requireTool('uwsgi');
  const dir = scratch(t);
  writeFileSync(path.join(dir, 'app.py'), FLASK_APP);
  const address = opts.unix ? `unix:${path.join(dir, 'u.sock')}` : `127.0.0.1:${await freePort()}`;
  const proc = startProcess(
    uwsgi,
    [
      '--plugin',
      'python3',
      '--socket',
      address.startsWith('unix:') ? address.slice(5) : address,
      '--wsgi-file',
      path.join(dir, 'app.py'),
      '--callable',
      'app',
      '--master',
      '--processes',
      '1',
      '--die-on-term',
      '--need-app',
      '--buffer-size',
      '65535',
    ],
    { cwd: dir, env: { ...process.env, NAME: name } },
  );
  t.after(() => proc.stop(5000));
  await waitForListen(address, 20000).catch((err) => {
    throw new Error(`${err.message}\n${proc.output()}`);
  });
  return { name, address, proc };
}

/** Flask under gunicorn (HTTP/1.1). */
export async function startGunicornFlask(t: TestContext, name: string): Promise<Backend> {
  const gunicorn = requireTool('gunicorn');
  const dir = scratch(t);
  writeFileSync(path.join(dir, 'app.py'), FLASK_APP);
  const port = await freePort();
  const proc = startProcess(gunicorn, ['--bind', `127.0.0.1:${port}`, '--workers', '1', '--chdir', dir, 'app:app'], {
    cwd: dir,
    env: { ...process.env, NAME: name },
  });
  t.after(() => proc.stop(5000));
  await waitForListen(`127.0.0.1:${port}`, 20000).catch((err) => {
    throw new Error(`${err.message}\n${proc.output()}`);
  });
  return { name, address: `127.0.0.1:${port}`, proc };
}

/** Flask under waitress (HTTP/1.1, Debian's python3-waitress). */
export async function startWaitressFlask(t: TestContext, name: string): Promise<Backend> {
  const waitress = requireTool('waitress-serve');
  const dir = scratch(t);
  writeFileSync(path.join(dir, 'app.py'), FLASK_APP);
  const port = await freePort();
  const proc = startProcess(waitress, [`--listen=127.0.0.1:${port}`, '--threads=4', 'app:app'], {
    cwd: dir,
    env: { ...process.env, NAME: name, PYTHONPATH: dir },
  });
  t.after(() => proc.stop(5000));
  await waitForListen(`127.0.0.1:${port}`, 20000).catch((err) => {
    throw new Error(`${err.message}\n${proc.output()}`);
  });
  return { name, address: `127.0.0.1:${port}`, proc };
}

export interface UpstreamSpec {
  protocol?: 'gatewire' | 'uwsgi' | 'http';
  servers: Array<{ address: string; weight?: number; backup?: boolean; max_conns?: number; resolve?: boolean } | string>;
  [key: string]: unknown;
}

export interface ProxySpec {
  routes?: Array<{ match: { host?: string; path_prefix: string }; upstream?: string; strip_prefix?: boolean; upgrade?: boolean; [key: string]: unknown }>;
  upstreams: Record<string, UpstreamSpec>;
  [key: string]: unknown;
}

export interface RunningProxy {
  url: string;
  admin: string | null;
  port: number;
  configFile: string;
  proc: Proc;
  /** Rewrites the config file (same listen/admin ports) — then SIGHUP to reload. */
  rewrite(spec: ProxySpec): void;
}

function configText(spec: ProxySpec, port: number, adminPort: number | null): string {
  const servers = (u: UpstreamSpec) => u.servers.map((s) => (typeof s === 'string' ? { address: s } : s));
  const cfg = {
    listen: { host: '127.0.0.1', port, ...((spec.listen as object | undefined) ?? {}) },
    admin: adminPort === null ? false : { host: '127.0.0.1', port: adminPort },
    log: { level: 'info', access: true },
    routes: spec.routes ?? [{ match: { path_prefix: '/' }, upstream: Object.keys(spec.upstreams)[0] }],
    ...Object.fromEntries(Object.entries(spec).filter(([k]) => k !== 'routes' && k !== 'upstreams' && k !== 'listen')),
    upstreams: Object.fromEntries(Object.entries(spec.upstreams).map(([k, u]) => [k, { ...u, servers: servers(u) }])),
  };
  return JSON.stringify(cfg, null, 2);
}

/** `gatewire proxy --config FILE` on a free port (and a free admin port unless admin: false). */
export async function startProxy(t: TestContext, spec: ProxySpec, opts: { admin?: boolean } = {}): Promise<RunningProxy> {
  const dir = scratch(t);
  const port = await freePort();
  const adminPort = opts.admin === false ? null : await freePort();
  const configFile = path.join(dir, 'gatewire.json');
  writeFileSync(configFile, configText(spec, port, adminPort));
  const proc = startGatewire(['proxy', '--config', configFile]);
  t.after(() => proc.stop(5000));
  await proc.waitFor(/listening on/, 20000);
  return {
    url: `http://127.0.0.1:${port}`,
    admin: adminPort === null ? null : `http://127.0.0.1:${adminPort}`,
    port,
    configFile,
    proc,
    rewrite: (next) => writeFileSync(configFile, configText(next, port, adminPort)),
  };
}

export interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json<T = Record<string, unknown>>(): T;
}

const agents = new Map<string, Agent>();
/** An undici agent bound to a local loopback address (127.0.0.x as the client IP for ip_hash). */
export function agentFrom(localAddress = '127.0.0.1'): Agent {
  let a = agents.get(localAddress);
  if (a === undefined) {
    a = new Agent({ localAddress, keepAliveTimeout: 1000 } as Agent.Options);
    agents.set(localAddress, a);
  }
  return a;
}

export async function call(
  url: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string | Buffer | AsyncIterable<Buffer>; from?: string; timeoutMs?: number } = {},
): Promise<Answer> {
  const res = await request(url, {
    method: (opts.method ?? 'GET') as 'GET',
    headers: opts.headers,
    body: opts.body as string,
    dispatcher: agentFrom(opts.from),
    headersTimeout: opts.timeoutMs ?? 30000,
    bodyTimeout: opts.timeoutMs ?? 30000,
  });
  const text = await res.body.text();
  return {
    status: res.statusCode,
    headers: res.headers,
    text,
    json: () => JSON.parse(text),
  };
}

/** GET /status on the admin port. */
export async function adminStatus(proxy: RunningProxy): Promise<{ upstreams: Array<{ name: string; hosts: Array<Record<string, unknown>> }> }> {
  const res = await call(`${proxy.admin}/status`);
  return res.json();
}

/** Lines of the proxy's pino output that are access-log entries. */
export function accessLog(proxy: RunningProxy): Array<Record<string, unknown>> {
  return proxy.proc
    .output()
    .split('\n')
    .filter((l) => l.includes('"msg":"access"'))
    .map((l) => JSON.parse(l));
}

export function countBy<T>(items: T[]): Map<T, number> {
  const m = new Map<T, number>();
  for (const x of items) m.set(x, (m.get(x) ?? 0) + 1);
  return m;
}
