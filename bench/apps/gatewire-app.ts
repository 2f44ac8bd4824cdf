// The Fetch app `gatewire serve` runs in configurations 2 and 5: the same routes
// and bytes as node-http.ts, written as a Fetch handler.
import { DOWNLOAD_CHUNK, HELLO_BODY, K64_BODY, SSE_INTERVAL_MS, downloadSize, sseEvent } from './routes.ts';

const encoder = new TextEncoder();
const HELLO = new Uint8Array(HELLO_BODY);
const K64 = new Uint8Array(K64_BODY);
const TEXT = { 'content-type': 'text/plain' };
const BINARY = { 'content-type': 'application/octet-stream' };

/** The path of an absolute URL without building a URL object (the hot path stays cheap). */
function pathOf(url: string): string {
  const start = url.indexOf('/', url.indexOf('//') + 2);
  if (start < 0) return '/';
  const q = url.indexOf('?', start);
  return q < 0 ? url.slice(start) : url.slice(start, q);
}

function sse(): Response {
  let timer: NodeJS.Timeout | undefined;
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      timer = setInterval(() => controller.enqueue(encoder.encode(sseEvent())), SSE_INTERVAL_MS);
    },
    cancel() {
      clearInterval(timer);
    },
  });
  return new Response(body, { headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' } });
}

function download(total: number): Response {
  let left = total;
  const full = new Uint8Array(DOWNLOAD_CHUNK.buffer, DOWNLOAD_CHUNK.byteOffset, DOWNLOAD_CHUNK.length);
  const body = new ReadableStream<Uint8Array>(
    {
      pull(controller) {
        if (left <= 0) {
          controller.close();
          return;
        }
        const n = Math.min(left, full.length);
        left -= n;
        controller.enqueue(n === full.length ? full : full.subarray(0, n));
      },
    },
    { highWaterMark: 0 },
  );
  return new Response(body, { headers: { ...BINARY, 'content-length': String(total) } });
}

async function echo(req: Request): Promise<Response> {
  let n = 0;
  if (req.body) for await (const chunk of req.body) n += chunk.byteLength;
  return new Response(String(n), { headers: TEXT });
}

export default {
  fetch(req: Request): Response | Promise<Response> {
    const path = pathOf(req.url);
    switch (path) {
      case '/hello':
        return new Response(HELLO, { headers: TEXT });
      case '/64k':
        return new Response(K64, { headers: BINARY });
      case '/echo':
        return echo(req);
      case '/sse':
        return sse();
      case '/download':
        return download(downloadSize(req.url));
      default:
        return new Response(null, { status: 404 });
    }
  },
};
