// A small Fetch app: the JS counterpart of a WSGI callable. `gatewire serve
// examples/hello.ts` runs it; the tests and the README use its routes.
//
//   GET  /                 "Hello, world!"
//   GET  /healthz          "ok"
//   POST /echo-length      {"length": N, "sha256": HEX} — the body is counted and hashed as it streams, never buffered
//   POST /echo             the request body streamed back
//   GET  /bytes/N          N bytes, produced as the client reads them (backpressure)
//   GET  /sse?n=5&ms=100   server-sent events, one every ms
//   GET  /slow?ms=500      answers after ms
//   GET  /hang             never answers (cut at --timeout with a 504)
//   GET  /status/CODE      an empty response with that status
//   GET  /cookies          two Set-Cookie headers
//   GET  /inspect          method, url, headers and client address as JSON
//   GET  /error, /reject   an exception, a rejected promise (500, stack only in the log)
//   GET  /block?ms=N       blocks the event loop (harakiri)
//   GET  /aborts           how many requests of this process saw their abort signal fire (the routes below /aborts)
//   GET  /pid              the serving process id

import { createHash } from 'node:crypto';

let aborts = 0;
const CHUNK = new Uint8Array(64 * 1024).fill(120); // 'x'

function bytes(n: number): ReadableStream<Uint8Array> {
  let left = n;
  return new ReadableStream<Uint8Array>(
    {
      pull(controller) {
        if (left <= 0) {
          controller.close();
          return;
        }
        const size = Math.min(left, CHUNK.length);
        left -= size;
        controller.enqueue(size === CHUNK.length ? CHUNK : CHUNK.subarray(0, size));
      },
    },
    { highWaterMark: 0 },
  );
}

function sse(n: number, ms: number, signal: AbortSignal): ReadableStream<Uint8Array> {
  const enc = new TextEncoder();
  let i = 0;
  let timer: NodeJS.Timeout | undefined;
  return new ReadableStream<Uint8Array>({
    start(controller) {
      const tick = () => {
        if (signal.aborted) return;
        controller.enqueue(enc.encode(`id: ${i}\ndata: event ${i}\n\n`));
        if (++i >= n) controller.close();
        else timer = setTimeout(tick, ms);
      };
      tick();
    },
    cancel() {
      clearTimeout(timer);
    },
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export default {
  async fetch(request: Request, info: { remoteAddr: { hostname: string; port: number; transport: string } }): Promise<Response> {
    const url = new URL(request.url);
    const path = url.pathname;
    // Answered at once: nothing here could be cut short, so these never create the request's signal.
    if (path === '/') return new Response('Hello, world!\n', { headers: { 'content-type': 'text/plain' } });
    if (path === '/healthz') return new Response('ok\n');
    if (path === '/pid') return new Response(`${process.pid}\n`);
    if (path === '/aborts') return new Response(`${aborts}\n`);
    request.signal.addEventListener('abort', () => aborts++, { once: true });
    if (path === '/echo-length') {
      let length = 0;
      const hash = createHash('sha256');
      if (request.body) {
        for await (const chunk of request.body) {
          length += chunk.byteLength;
          hash.update(chunk);
        }
      }
      return Response.json({ length, sha256: hash.digest('hex') });
    }
    if (path === '/echo') return new Response(request.body, { headers: { 'content-type': request.headers.get('content-type') ?? 'application/octet-stream' } });
    if (path.startsWith('/bytes/')) {
      const n = Number(path.slice(7));
      if (!Number.isSafeInteger(n) || n < 0) return new Response('bad size\n', { status: 400 });
      return new Response(bytes(n), { headers: { 'content-type': 'application/octet-stream', 'content-length': String(n) } });
    }
    if (path === '/sse') {
      const n = Number(url.searchParams.get('n') ?? 5);
      const ms = Number(url.searchParams.get('ms') ?? 100);
      return new Response(sse(n, ms, request.signal), { headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' } });
    }
    if (path === '/slow') {
      await sleep(Number(url.searchParams.get('ms') ?? 500));
      return new Response('slow\n');
    }
    if (path === '/hang') return new Promise<Response>(() => {});
    if (path.startsWith('/status/')) {
      const status = Number(path.slice(8));
      return new Response(null, { status });
    }
    if (path === '/cookies') {
      const headers = new Headers({ 'content-type': 'text/plain' });
      headers.append('set-cookie', 'a=1; Path=/');
      headers.append('set-cookie', 'b=2; Path=/; HttpOnly');
      return new Response('two cookies\n', { headers });
    }
    if (path.startsWith('/inspect')) {
      return Response.json({
        method: request.method,
        url: request.url,
        headers: Object.fromEntries(request.headers),
        remoteAddr: info.remoteAddr,
      });
    }
    if (path === '/error') throw new Error('boom: an exception in the app');
    if (path === '/reject') return Promise.reject(new Error('boom: a rejected promise'));
    if (path === '/block') {
      const until = Date.now() + Number(url.searchParams.get('ms') ?? 1000);
      while (Date.now() < until) {}
      return new Response('unblocked\n');
    }
    return new Response('Not Found\n', { status: 404 });
  },
};
