// The static-file scenario of `npm run bench` (issue 14): a 4 KiB and a 1 MiB file served from
// disk by `gatewire proxy` (a routes[].static route) and by NGINX (root + sendfile, its defaults
// otherwise), one worker process each, both with their default access log, loaded with the same
// wrk run, rounds interleaved. Reports req/s, p99, CPU µs per request and peak RSS, and the ratio
// to NGINX. The bar: ≥ 0.5× NGINX's req/s on the 4 KiB file.
//
// What bounds the 1 MiB figure: NGINX hands the file to the kernel with sendfile(2), which copies
// page-cache pages to the socket without the bytes ever entering user space; Node has no sendfile
// for TCP sockets, so every byte is read() into a JavaScript-visible buffer and write()n back out
// (two copies, two syscalls per 64 KiB chunk, and the buffers' garbage), which is most of the CPU.
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { tempDir, freePort, waitForListen } from '../test/helpers/net.ts';
import { type Proc, startGatewire, startProcess } from '../test/helpers/procs.ts';
import { requireTool } from '../test/helpers/tools.ts';
import { TierMonitor, waitForCalm } from './lib/procfs.ts';
import { median } from './lib/stats.ts';
import { type Column, markdownTable, type TableRow } from './lib/table.ts';
import { runWrk } from './lib/wrk.ts';

export interface StaticBenchSettings {
  rounds: number;
  durationS: number;
  connections: number;
  calmMs: number;
}

interface Server {
  id: string;
  label: string;
  port: number;
  proc: Proc;
}

const FILES = [
  { id: '4k', name: 'file-4k.bin', bytes: 4 * 1024 },
  { id: '1m', name: 'file-1m.bin', bytes: 1024 * 1024 },
];

const COLUMNS: Column[] = [
  { key: 'rps', title: 'req/s' },
  { key: 'ratio', title: '× nginx' },
  { key: 'p99Ms', title: 'p99 ms', digits: 2 },
  { key: 'cpuUs', title: 'CPU µs/req', digits: 1 },
  { key: 'rssMiB', title: 'peak RSS MiB', digits: 1 },
  { key: 'errors', title: 'errors' },
];

function nginxConf(dir: string, root: string, port: number): string {
  const user = process.getuid?.() === 0 ? 'user root;\n' : '';
  return `${user}daemon off;
master_process on;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/nginx-error.log warn;
events { worker_connections 4096; }
http {
  include /etc/nginx/mime.types;
  access_log ${dir}/access.log;
  client_body_temp_path ${dir}/ngx-body;
  proxy_temp_path ${dir}/ngx-proxy;
  uwsgi_temp_path ${dir}/ngx-uwsgi;
  fastcgi_temp_path ${dir}/ngx-fcgi;
  scgi_temp_path ${dir}/ngx-scgi;
  sendfile on;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:${port} backlog=4096;
    root ${root};
  }
}
`;
}

async function startServers(dir: string, root: string): Promise<Server[]> {
  const nginxPort = await freePort();
  writeFileSync(path.join(dir, 'nginx.conf'), nginxConf(dir, root, nginxPort));
  const nginx = startProcess(requireTool('nginx'), ['-p', `${dir}/`, '-c', path.join(dir, 'nginx.conf'), '-e', `${dir}/nginx-error.log`]);
  const gwPort = await freePort();
  // the default config otherwise: access log on, info level
  writeFileSync(
    path.join(dir, 'proxy.json'),
    JSON.stringify({ listen: { host: '127.0.0.1', port: gwPort }, admin: false, routes: [{ match: { path_prefix: '/' }, static: { root } }], upstreams: { unused: { protocol: 'http', servers: [{ address: '127.0.0.1:9' }] } } }),
  );
  const gw = startGatewire(['proxy', '--config', path.join(dir, 'proxy.json')]);
  await Promise.all([waitForListen(`127.0.0.1:${nginxPort}`), waitForListen(`127.0.0.1:${gwPort}`)]);
  return [
    { id: 'gatewire', label: 'gatewire proxy, routes[].static', port: gwPort, proc: gw },
    { id: 'nginx', label: 'nginx root + sendfile on', port: nginxPort, proc: nginx },
  ];
}

export async function runStaticBench(set: StaticBenchSettings, log: (m: string) => void): Promise<{ markdown: string; json: Record<string, unknown>; bar: string }> {
  const { dir, cleanup } = tempDir('gwb-static-');
  const root = path.join(dir, 'www');
  (await import('node:fs')).mkdirSync(root);
  for (const f of FILES) writeFileSync(path.join(root, f.name), randomBytes(f.bytes));
  const servers = await startServers(dir, root);
  const samples = new Map<string, Array<{ rps: number; p99Ms: number; cpuUs: number; rssMiB: number; errors: number }>>();
  try {
    for (const f of FILES) for (const s of servers) await runWrk({ url: `http://127.0.0.1:${s.port}/${f.name}`, connections: set.connections, durationS: 1 });
    for (let round = 1; round <= set.rounds; round++) {
      for (const f of FILES) {
        for (const s of servers) {
          if (set.calmMs > 0) await waitForCalm(set.calmMs);
          const monitor = new TierMonitor(s.proc.child.pid as number);
          monitor.start();
          const { result } = await runWrk({ url: `http://127.0.0.1:${s.port}/${f.name}`, connections: set.connections, durationS: set.durationS, timeoutS: 5 });
          const usage = monitor.stop();
          const key = `${f.id} ${s.id}`;
          const list = samples.get(key) ?? [];
          list.push({ rps: result.rps, p99Ms: result.p99Ms, cpuUs: result.requests > 0 ? (usage.cpuSeconds * 1e6) / result.requests : Number.NaN, rssMiB: usage.peakRssKb / 1024, errors: result.errors });
          samples.set(key, list);
          log(`[static ${f.id} ${round}/${set.rounds}] ${s.id} rps=${Math.round(result.rps)} errors=${result.errors}`);
        }
      }
    }
  } finally {
    await Promise.all(servers.map((s) => s.proc.stop(5000)));
    cleanup();
  }
  const json: Record<string, unknown> = {};
  const parts: string[] = [];
  let bar = '';
  for (const f of FILES) {
    const med = (id: string, k: 'rps' | 'p99Ms' | 'cpuUs' | 'rssMiB') => median((samples.get(`${f.id} ${id}`) ?? []).map((x) => x[k]));
    const errors = (id: string) => (samples.get(`${f.id} ${id}`) ?? []).reduce((a, x) => a + x.errors, 0);
    const nginxRps = med('nginx', 'rps');
    const rows: TableRow[] = servers.map((s, i) => ({
      id: String(i + 1),
      label: s.label,
      values: { rps: med(s.id, 'rps'), ratio: med(s.id, 'rps') / nginxRps, p99Ms: med(s.id, 'p99Ms'), cpuUs: med(s.id, 'cpuUs'), rssMiB: med(s.id, 'rssMiB'), errors: errors(s.id) },
    }));
    json[f.id] = Object.fromEntries(rows.map((r, i) => [servers[i].id, r.values]));
    parts.push(`### static file — GET ${f.bytes === 4096 ? '4 KiB' : '1 MiB'} from disk\n\n${markdownTable(COLUMNS, rows)}`);
    if (f.id === '4k') {
      const r = med('gatewire', 'rps') / nginxRps;
      bar = `static 4 KiB: gatewire ${r.toFixed(2)}× nginx (bar ≥ 0.50×: ${r >= 0.5 ? 'met' : 'NOT met'})`;
    }
  }
  const method =
    `Method: one worker process each (nginx master + 1 worker, gatewire proxy 1 process), default access logs on, ` +
    `\`wrk -t1 -c${set.connections} -d${set.durationS}s\`, ${set.rounds} interleaved round(s), medians. ` +
    'nginx sends with sendfile(2); Node has none for sockets, so gatewire reads each file into memory and writes it out (the 1 MiB row shows the cost).';
  return { markdown: `## Static files (issue 14)\n\n${method}\n\n${parts.join('\n\n')}\n\n${bar}\n`, json, bar };
}
