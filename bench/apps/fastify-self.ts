// Configuration 0: Fastify answering every route itself — the ceiling of any
// Fastify-based edge on this machine. Usage: node --import ./bin/typescript-loader.js bench/apps/fastify-self.ts HOST:PORT
import Fastify from 'fastify';
import { Readable } from 'node:stream';
import type { ServerResponse } from 'node:http';
import { DOWNLOAD_CHUNK, HELLO_BODY, K64_BODY, SSE_INTERVAL_MS, downloadSize, parseListen, sseEvent } from './routes.ts';

const app = Fastify({ logger: false, keepAliveTimeout: 75_000, requestTimeout: 0, bodyLimit: 2 ** 40 });

// Count the body as it streams instead of buffering it: the app only answers its length.
app.addContentTypeParser('*', (_req, payload, done) => {
  let n = 0;
  payload.on('data', (c: Buffer) => {
    n += c.length;
  });
  payload.on('end', () => done(null, n));
  payload.on('error', (err) => done(err as Error, undefined));
});

const sseClients = new Set<ServerResponse>();
setInterval(() => {
  if (sseClients.size === 0) return;
  const ev = sseEvent();
  for (const res of sseClients) res.write(ev);
}, SSE_INTERVAL_MS).unref();

app.get('/hello', (_req, reply) => {
  reply.header('content-type', 'text/plain').send(HELLO_BODY);
});
app.get('/64k', (_req, reply) => {
  reply.header('content-type', 'application/octet-stream').send(K64_BODY);
});
app.post('/echo', (req, reply) => {
  reply.header('content-type', 'text/plain').send(String((req.body as number | undefined) ?? 0));
});
app.get('/sse', (req, reply) => {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' });
  res.flushHeaders();
  sseClients.add(res);
  req.raw.on('close', () => sseClients.delete(res));
});
app.get('/download', (req, reply) => {
  const total = downloadSize(req.url);
  let left = total;
  const body = new Readable({
    read() {
      while (left > 0) {
        const n = Math.min(left, DOWNLOAD_CHUNK.length);
        left -= n;
        if (!this.push(n === DOWNLOAD_CHUNK.length ? DOWNLOAD_CHUNK : DOWNLOAD_CHUNK.subarray(0, n))) return;
      }
      this.push(null);
    },
  });
  reply.header('content-type', 'application/octet-stream').header('content-length', total).send(body);
});

const listen = parseListen(process.argv[2] ?? '127.0.0.1:3000');
if ('path' in listen) await app.listen({ path: listen.path });
else await app.listen({ host: listen.host, port: listen.port });
process.stdout.write(`listening on ${process.argv[2]}\n`);
process.on('SIGTERM', () => process.exit(0));
