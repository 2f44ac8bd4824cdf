// uWSGI-style stats: `--stats HOST:PORT` answers every HTTP request with one
// JSON document describing the master and each worker.
import http from 'node:http';
import { parseListenAddress } from '../supervisor/listen.ts';

export interface WorkerStats {
  id: number;
  pid: number;
  state: string;
  requests: number;
  inflight: number;
  connections: number;
  rss: number;
  restarts: number;
  startedAt: string;
}

export interface StatsDocument {
  pid: number;
  version: number;
  app: string;
  interface: string;
  listen: string[];
  uptimeSeconds: number;
  workers: WorkerStats[];
  totals: { requests: number; inflight: number; restarts: number };
}

export async function startStatsServer(address: string, collect: () => StatsDocument): Promise<http.Server> {
  const addr = parseListenAddress(address);
  const server = http.createServer((req, res) => {
    const body = JSON.stringify(collect(), null, req.url?.includes('pretty') ? 2 : 0);
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if (addr.kind === 'unix') server.listen(addr.path, resolve);
    else server.listen(addr.port, addr.host, resolve);
  });
  server.unref();
  return server;
}

export function totals(workers: WorkerStats[]): StatsDocument['totals'] {
  let requests = 0;
  let inflight = 0;
  let restarts = 0;
  for (const w of workers) {
    requests += w.requests;
    inflight += w.inflight;
    restarts += w.restarts;
  }
  return { requests, inflight, restarts };
}
