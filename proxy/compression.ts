// Response compression (NGINX's gzip module, plus brotli and zstd): negotiated per request by
// Accept-Encoding q-values among the encodings the route offers, streamed through Node's zlib so a
// response of any size passes in bounded memory.
//
// Not @fastify/compress: it compresses in an onSend hook configured once per Fastify route at
// boot, while our routes are config routes matched inside one catch-all handler and swapped on
// SIGHUP; it also keeps strong ETags strong and Content-Length checks to payloads it can measure,
// and would compress text/event-stream (its events then sit in the compressor's buffer). What it
// does that we need (q-value negotiation, the no-transform and already-encoded checks, a type
// list) is a few dozen lines here, on the one response path every request already takes.
import type { OutgoingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import zlib from 'node:zlib';
import type { CompressConfig, Encoding } from './config/edge.ts';
import type { EdgeMetrics } from './edge-metrics.ts';

/** zstd arrived in Node 22.15/23.8; older runtimes simply do not offer it. */
export const ZSTD_AVAILABLE = typeof (zlib as { createZstdCompress?: unknown }).createZstdCompress === 'function';

/**
 * The offered encoding the client prefers: highest q-value, ties broken by `offered` order (the
 * server's preference). `*` covers every coding the client did not name; q=0 refuses. null when
 * nothing offered is acceptable (identity is then sent, which RFC 9110 allows unless refused).
 */
export function negotiateEncoding(acceptEncoding: string | undefined, offered: readonly Encoding[]): Encoding | null {
  if (acceptEncoding === undefined || acceptEncoding.length === 0) return null;
  let starQ = -1;
  const named = new Map<string, number>();
  for (const part of acceptEncoding.split(',')) {
    const semi = part.indexOf(';');
    const coding = (semi < 0 ? part : part.slice(0, semi)).trim().toLowerCase();
    if (coding.length === 0) continue;
    let q = 1;
    if (semi >= 0) {
      const m = /(?:^|;)\s*q\s*=\s*([0-9.]+)/i.exec(part.slice(semi));
      if (m) q = Number(m[1]);
      if (!Number.isFinite(q) || q < 0) q = 0;
      if (q > 1) q = 1;
    }
    if (coding === '*') starQ = q;
    else named.set(coding === 'x-gzip' ? 'gzip' : coding, Math.max(q, named.get(coding) ?? -1));
  }
  let best: Encoding | null = null;
  let bestQ = 0;
  for (const enc of offered) {
    if (enc === 'zstd' && !ZSTD_AVAILABLE) continue;
    const q = named.get(enc) ?? starQ;
    if (q > bestQ) {
      best = enc;
      bestQ = q;
    }
  }
  return best;
}

/** "text/*", "*+json" and exact types, against the media type without parameters. */
export function typeMatches(contentType: string, patterns: readonly string[]): boolean {
  const semi = contentType.indexOf(';');
  const type = (semi < 0 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
  for (const p of patterns) {
    if (p === type) return true;
    if (p.endsWith('/*') && type.startsWith(p.slice(0, -1))) return true;
    if (p.startsWith('*+') && type.endsWith(p.slice(1))) return true;
  }
  return false;
}

function createCompressStream(enc: Encoding, level: number): zlib.Gzip | zlib.BrotliCompress {
  // 64 KiB chunks: fewer, larger writes to the socket than zlib's 16 KiB default
  const chunkSize = 64 * 1024;
  if (enc === 'gzip') return zlib.createGzip({ level, chunkSize });
  if (enc === 'br') {
    return zlib.createBrotliCompress({ chunkSize, params: { [zlib.constants.BROTLI_PARAM_QUALITY]: level, [zlib.constants.BROTLI_PARAM_MODE]: zlib.constants.BROTLI_MODE_TEXT } });
  }
  const z = zlib as unknown as { createZstdCompress(o: object): zlib.Gzip; constants: Record<string, number> };
  return z.createZstdCompress({ chunkSize, params: { [z.constants.ZSTD_c_compressionLevel]: level } });
}

function compressSync(enc: Encoding, level: number, body: Buffer): Buffer {
  if (enc === 'gzip') return zlib.gzipSync(body, { level });
  if (enc === 'br') return zlib.brotliCompressSync(body, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: level, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: body.length } });
  const z = zlib as unknown as { zstdCompressSync(b: Buffer, o: object): Buffer; constants: Record<string, number> };
  return z.zstdCompressSync(body, { params: { [z.constants.ZSTD_c_compressionLevel]: level } });
}

/** Buffers up to this size are compressed in one synchronous call (cheaper than a stream's ticks). */
const SYNC_LIMIT = 64 * 1024;

/** What a response looks like to the compression decision; the caller maps it to its headers API. */
export interface ResponseHead {
  get(name: string): string | number | string[] | undefined;
  set(name: string, value: string): void;
  remove(name: string): void;
}

export function appendVary(head: ResponseHead, token: string): void {
  const vary = head.get('vary');
  if (vary === undefined) {
    head.set('vary', token);
    return;
  }
  const text = Array.isArray(vary) ? vary.join(', ') : String(vary);
  if (text.trim() === '*') return;
  if (text.split(',').some((v) => v.trim().toLowerCase() === token.toLowerCase())) return;
  head.set('vary', `${text}, ${token}`);
}

export function weakenEtag(head: ResponseHead): void {
  const etag = head.get('etag');
  if (typeof etag === 'string' && etag.startsWith('"')) head.set('etag', `W/${etag}`);
}

/** One route's (or the top level's) compression, compiled. */
export class Compression {
  readonly cfg: CompressConfig;
  private readonly metrics: EdgeMetrics | null;
  constructor(cfg: CompressConfig, metrics: EdgeMetrics | null) {
    this.cfg = cfg;
    this.metrics = metrics;
  }

  /**
   * Decides for one response and rewrites its head; returns the body to send in place of `body`.
   * `status`, `method` and the request's Accept-Encoding come from the exchange.
   */
  apply<B extends Readable | Buffer | string | null>(method: string, acceptEncoding: string | undefined, status: number, head: ResponseHead, body: B): B | Readable | Buffer {
    const ct = head.get('content-type');
    if (typeof ct !== 'string' || ct.startsWith('text/event-stream')) return body;
    if (!typeMatches(ct, this.cfg.types)) return body;
    if (head.get('content-encoding') !== undefined) return body;
    const cc = head.get('cache-control');
    if (cc !== undefined && /(?:^|,)\s*no-transform\s*(?:,|$)/i.test(String(cc))) return body;
    // The representation varies with Accept-Encoding from here on, whatever this request gets.
    appendVary(head, 'Accept-Encoding');
    if (method === 'HEAD' || status < 200 || status === 204 || status === 206 || status === 304 || head.get('content-range') !== undefined) return body;
    const cl = head.get('content-length');
    const length = cl === undefined ? (Buffer.isBuffer(body) ? body.length : typeof body === 'string' ? Buffer.byteLength(body) : -1) : Number(cl);
    if (length >= 0 && length < this.cfg.min_length) return body;
    if (body === null) return body;
    const enc = negotiateEncoding(acceptEncoding, this.cfg.encodings);
    if (enc === null) return body;
    head.set('content-encoding', enc);
    head.remove('content-length');
    weakenEtag(head);
    const level = this.cfg.levels[enc];
    if (typeof body === 'string' || Buffer.isBuffer(body)) {
      const input = typeof body === 'string' ? Buffer.from(body) : body;
      if (input.length <= SYNC_LIMIT) {
        const out = compressSync(enc, level, input);
        this.metrics?.compressed(enc, input.length, out.length);
        return out;
      }
      const z = createCompressStream(enc, level);
      this.count(z, enc);
      z.end(input);
      return z;
    }
    const source = body as Readable;
    const z = createCompressStream(enc, level);
    this.count(z, enc);
    // the source's failure fails the compressed body, which Fastify then treats as a broken stream
    source.once('error', (err) => z.destroy(err));
    z.once('close', () => {
      if (!source.destroyed && !source.readableEnded) source.destroy();
    });
    source.pipe(z);
    return z;
  }

  private count(z: zlib.Gzip | zlib.BrotliCompress, enc: Encoding): void {
    const metrics = this.metrics;
    if (metrics === null) return;
    let out = 0;
    // counted as zlib pushes, before the consumer sees it; no flowing-mode change for the consumer
    const push = z.push;
    z.push = function countedPush(this: typeof z, chunk: unknown, encoding?: BufferEncoding): boolean {
      if (chunk !== null && chunk !== undefined) out += (chunk as Buffer).length;
      return push.call(this, chunk, encoding);
    };
    z.once('end', () => metrics.compressed(enc, z.bytesWritten, out));
  }
}

/** ResponseHead over a Fastify reply. */
export function replyHead(reply: { getHeader(n: string): unknown; header(n: string, v: string): unknown; removeHeader(n: string): unknown }): ResponseHead {
  return {
    get: (n) => reply.getHeader(n) as string | number | string[] | undefined,
    set: (n, v) => {
      reply.header(n, v);
    },
    remove: (n) => {
      reply.removeHeader(n);
    },
  };
}

/** ResponseHead over a plain header object (the static file path builds one). */
export function objectHead(headers: OutgoingHttpHeaders): ResponseHead {
  return {
    get: (n) => headers[n] as string | number | string[] | undefined,
    set: (n, v) => {
      headers[n] = v;
    },
    remove: (n) => {
      delete headers[n];
    },
  };
}
