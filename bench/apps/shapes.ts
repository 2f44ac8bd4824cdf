// The ways users write an app, one route per shape, for bench/shapes.ts. Every
// shape comes twice: as `gatewire serve` runs it (a Fetch handler, or a Node
// listener) and as node:http would serve the same app (the same listener; for
// a Fetch shape, the idiomatic node:http code that sends the same bytes).
// Request bodies are read the way each shape says and answered with their length.
import { createReadStream, unlinkSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import express from 'express';

const HELLO = 'Hello, World!';
const K64 = Buffer.alloc(65536, 0x78);
const K16 = Buffer.alloc(16384, 0x79);
const OBJ = { id: 42, name: 'gatewire', tags: ['a', 'b', 'c'], nested: { ok: true, n: 3.5 } };
const FILE = path.join(os.tmpdir(), `gw-shapes-64k-${process.pid}.bin`);
writeFileSync(FILE, K64);
process.once('exit', () => {
  try {
    unlinkSync(FILE);
  } catch {}
});

function pathOf(url: string): string {
  const start = url.startsWith('/') ? 0 : url.indexOf('/', url.indexOf('//') + 2);
  if (start < 0) return '/';
  const q = url.indexOf('?', start);
  return q < 0 ? url.slice(start) : url.slice(start, q);
}

// --- Fetch shapes -----------------------------------------------------------

function streamOf(chunks: Array<Uint8Array | string>): ReadableStream {
  let i = 0;
  return new ReadableStream({
    pull(c) {
      if (i < chunks.length) c.enqueue(chunks[i++]);
      else c.close();
    },
  });
}

const length = (n: number) => new Response(String(n), { headers: { 'content-type': 'text/plain' } });

export const fetchShapes: Record<string, (req: Request) => Response | Promise<Response>> = {
  '/f/string': () => new Response(HELLO),
  '/f/bytes-64k': () => new Response(new Uint8Array(K64.buffer, K64.byteOffset, K64.length), { headers: { 'content-type': 'application/octet-stream' } }),
  '/f/buffer-pairs-cl': () =>
    new Response(K64, {
      headers: [
        ['content-type', 'application/octet-stream'],
        ['content-length', '65536'],
      ],
    }),
  '/f/arraybuffer': () => new Response(K64.buffer.slice(K64.byteOffset, K64.byteOffset + K64.length) as ArrayBuffer, { headers: { 'content-type': 'application/octet-stream' } }),
  '/f/headers-object': () => new Response(HELLO, { headers: new Headers({ 'content-type': 'text/plain', 'x-shape': 'headers' }) }),
  '/f/null-204': () => new Response(null, { status: 204 }),
  '/f/304': () => new Response(null, { status: 304, headers: { etag: '"abc"' } }),
  '/f/json': () => Response.json(OBJ),
  '/f/redirect': () => Response.redirect('http://localhost/f/string', 302),
  '/f/blob': () => new Response(new Blob([HELLO], { type: 'text/plain' })),
  '/f/stream-bytes': () => new Response(streamOf([K16, K16, K16, K16]), { headers: { 'content-type': 'application/octet-stream' } }),
  '/f/stream-strings': () => new Response(streamOf(['a'.repeat(1000), 'b'.repeat(1000), 'c'.repeat(1000)]), { headers: { 'content-type': 'text/plain' } }),
  '/f/body-text': async (req) => length((await req.text()).length),
  '/f/body-json': async (req) => Response.json({ keys: Object.keys((await req.json()) as object).length }),
  '/f/body-arraybuffer': async (req) => length((await req.arrayBuffer()).byteLength),
  '/f/body-formdata': async (req) => length([...(await req.formData()).keys()].length),
  '/f/body-reader': async (req) => {
    const reader = req.body!.getReader();
    let n = 0;
    for (;;) {
      const r = await reader.read();
      if (r.done) break;
      n += r.value.byteLength;
    }
    return length(n);
  },
  '/f/body-for-await': async (req) => {
    let n = 0;
    for await (const chunk of req.body as unknown as AsyncIterable<Uint8Array>) n += chunk.byteLength;
    return length(n);
  },
  '/f/body-unread': () => length(0),
};

export const fetchApp = {
  fetch(req: Request): Response | Promise<Response> {
    const shape = fetchShapes[pathOf(req.url)];
    return shape ? shape(req) : new Response('no such shape\n', { status: 404 });
  },
};

// What node:http code sending the same bytes looks like, for each Fetch shape.
function readAll(req: IncomingMessage, done: (body: Buffer) => void): void {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => done(Buffer.concat(chunks)));
}
function countBody(req: IncomingMessage, done: (n: number) => void): void {
  let n = 0;
  req.on('data', (c: Buffer) => {
    n += c.length;
  });
  req.on('end', () => done(n));
}
function endText(res: ServerResponse, text: string): void {
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
const OCTETS = { 'content-type': 'application/octet-stream', 'content-length': '65536' };

export const nodeEquivalents: Record<string, (req: IncomingMessage, res: ServerResponse) => void> = {
  '/f/string': (_q, res) => {
    res.writeHead(200, { 'content-type': 'text/plain;charset=UTF-8', 'content-length': 13 });
    res.end(HELLO);
  },
  '/f/bytes-64k': (_q, res) => {
    res.writeHead(200, OCTETS);
    res.end(K64);
  },
  '/f/buffer-pairs-cl': (_q, res) => {
    res.writeHead(200, OCTETS);
    res.end(K64);
  },
  '/f/arraybuffer': (_q, res) => {
    // The same app work as the Fetch shape: a fresh ArrayBuffer per response.
    res.writeHead(200, OCTETS);
    res.end(Buffer.from(K64.buffer.slice(K64.byteOffset, K64.byteOffset + K64.length)));
  },
  '/f/headers-object': (_q, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'x-shape': 'headers', 'content-length': 13 });
    res.end(HELLO);
  },
  '/f/null-204': (_q, res) => {
    res.writeHead(204);
    res.end();
  },
  '/f/304': (_q, res) => {
    res.writeHead(304, { etag: '"abc"' });
    res.end();
  },
  '/f/json': (_q, res) => {
    const text = JSON.stringify(OBJ);
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  },
  '/f/redirect': (_q, res) => {
    res.writeHead(302, { location: 'http://localhost/f/string', 'content-length': 0 });
    res.end();
  },
  '/f/blob': (_q, res) => {
    // The same app work as the Fetch shape: the body made as a Blob, then sent.
    new Blob([HELLO], { type: 'text/plain' }).arrayBuffer().then((ab) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': ab.byteLength });
      res.end(Buffer.from(ab));
    });
  },
  '/f/stream-bytes': (_q, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    for (let i = 0; i < 3; i++) res.write(K16);
    res.end(K16);
  },
  '/f/stream-strings': (_q, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('a'.repeat(1000));
    res.write('b'.repeat(1000));
    res.end('c'.repeat(1000));
  },
  '/f/body-text': (req, res) => readAll(req, (b) => endText(res, String(b.toString().length))),
  '/f/body-json': (req, res) =>
    readAll(req, (b) => {
      const text = JSON.stringify({ keys: Object.keys(JSON.parse(b.toString())).length });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    }),
  '/f/body-arraybuffer': (req, res) => countBody(req, (n) => endText(res, String(n))),
  '/f/body-formdata': (req, res) => readAll(req, (b) => endText(res, String([...new URLSearchParams(b.toString()).keys()].length))),
  '/f/body-reader': (req, res) => countBody(req, (n) => endText(res, String(n))),
  '/f/body-for-await': (req, res) => countBody(req, (n) => endText(res, String(n))),
  '/f/body-unread': (_q, res) => endText(res, '0'),
};

// --- Node listener shapes (served as they are by both) ------------------------

const expressApp = express();
expressApp.disable('x-powered-by');
expressApp.get('/n/express-json', (_req, res) => {
  res.json(OBJ);
});
expressApp.get('/n/express-send', (_req, res) => {
  res.send(HELLO);
});
expressApp.post('/n/express-json-body', express.json({ limit: '2mb' }), (req, res) => {
  res.json({ keys: Object.keys(req.body as object).length });
});

class Counter extends Writable {
  n = 0;
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.n += chunk.length;
    cb();
  }
}

export const nodeShapes: Record<string, (req: IncomingMessage, res: ServerResponse) => void> = {
  '/n/end-string': (_req, res) => {
    res.setHeader('content-type', 'text/plain');
    res.end(HELLO);
  },
  '/n/end-buffer-64k': (_req, res) => {
    res.setHeader('content-type', 'application/octet-stream');
    res.end(K64);
  },
  '/n/koa-style': (_req, res) => {
    // What Koa's respond() does with ctx.body = object.
    const body = JSON.stringify(OBJ);
    res.statusCode = 200;
    res.setHeader('Content-Type', 'application/json; charset=utf-8');
    res.setHeader('Content-Length', Buffer.byteLength(body));
    res.end(body);
  },
  '/n/write-stream': (_req, res) => {
    res.setHeader('content-type', 'application/octet-stream');
    for (let i = 0; i < 3; i++) res.write(K16);
    res.end(K16);
  },
  '/n/writehead-array': (_req, res) => {
    res.writeHead(200, ['content-type', 'text/plain', 'x-shape', 'array', 'content-length', '13']);
    res.end(HELLO);
  },
  '/n/pipe-file': (_req, res) => {
    res.setHeader('content-type', 'application/octet-stream');
    res.setHeader('content-length', K64.length);
    createReadStream(FILE).pipe(res);
  },
  '/n/req-data': (req, res) => {
    let n = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
    });
    req.on('end', () => endText(res, String(n)));
  },
  '/n/req-pipe': (req, res) => {
    const sink = new Counter();
    req.pipe(sink).on('finish', () => endText(res, String(sink.n)));
  },
};

export function nodeApp(req: IncomingMessage, res: ServerResponse): void {
  const p = pathOf(req.url ?? '/');
  const shape = nodeShapes[p] ?? nodeEquivalents[p];
  if (shape) shape(req, res);
  else expressApp(req as never, res as never);
}
