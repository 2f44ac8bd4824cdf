// The plain node:http app (configurations 1, 3 and 4): the no-proxy ceiling and the
// upstream of the HTTP proxies. Usage: node --import ./bin/typescript-loader.js bench/apps/node-http.ts HOST:PORT|unix:/path
import http from 'node:http';
import { DOWNLOAD_CHUNK, HELLO_BODY, K64_BODY, SSE_INTERVAL_MS, downloadSize, parseListen, sseEvent } from './routes.ts';

const sseClients = new Set<http.ServerResponse>();
setInterval(() => {
  if (sseClients.size === 0) return;
  const ev = sseEvent();
  for (const res of sseClients) res.write(ev);
}, SSE_INTERVAL_MS).unref();

function download(res: http.ServerResponse, total: number): void {
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': total });
  let left = total;
  const pump = () => {
    while (left > 0) {
      const n = Math.min(left, DOWNLOAD_CHUNK.length);
      left -= n;
      const more = res.write(n === DOWNLOAD_CHUNK.length ? DOWNLOAD_CHUNK : DOWNLOAD_CHUNK.subarray(0, n));
      if (!more && left > 0) {
        res.once('drain', pump);
        return;
      }
    }
    res.end();
  };
  res.on('close', () => {
    left = 0;
  });
  pump();
}

const server = http.createServer((req, res) => {
  const url = req.url ?? '/';
  if (url === '/hello') {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': HELLO_BODY.length });
    res.end(HELLO_BODY);
  } else if (url === '/64k') {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': K64_BODY.length });
    res.end(K64_BODY);
  } else if (url === '/echo') {
    let n = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
    });
    req.on('end', () => {
      const body = String(n);
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
      res.end(body);
    });
  } else if (url === '/sse') {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' });
    res.flushHeaders();
    sseClients.add(res);
    res.on('close', () => sseClients.delete(res));
  } else if (url.startsWith('/download')) {
    download(res, downloadSize(url));
  } else {
    res.writeHead(404, { 'content-length': 0 });
    res.end();
  }
});
// nginx's default; Node's 5 s would drop the idle keep-alive connections the benchmark holds.
server.keepAliveTimeout = 75_000;
server.headersTimeout = 80_000;
server.requestTimeout = 0;
const listen = process.argv[2] ?? '127.0.0.1:3000';
server.listen(parseListen(listen), () => process.stdout.write(`listening on ${listen}\n`));
process.on('SIGTERM', () => process.exit(0));
