// A route that serves a directory (NGINX's root/alias, index, try_files, expires, gzip_static).
//
// Not @fastify/static: it registers Fastify routes per prefix at boot, while our routes are matched
// by host and prefix inside one catch-all handler and swapped on SIGHUP, and try_files must fall
// through to the route's upstream when no file matches. Its engine @fastify/send would fit that
// shape, but it emits weak ETags (so an If-Range from a client resuming a download never matches
// and the whole file is resent), follows symlinks anywhere, and normalises its options on every
// call. What is left is small and hot: open, fstat, check, one read for small files. We do use
// its MIME table (@fastify/send's `mime`).
//
// Safety: the request path is decoded once; NUL, backslashes and ".." segments (however encoded)
// are refused before any file system call; dotfile segments are refused unless allowed; and the
// file actually opened is resolved through /proc/self/fd (its real path, symlinks followed) and
// must lie inside the real root, so neither a symlink nor a sidecar can reach outside it.
import fs from 'node:fs';
import type { OutgoingHttpHeaders } from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { type Compression, negotiateEncoding, objectHead } from './compression.ts';
import type { Encoding, StaticConfig } from './config/edge.ts';
import type { EdgeMetrics } from './edge-metrics.ts';

type MimeTable = { getType(p: string): string | null };
// loaded with the first static route (8 MB of RSS, 50 ms): a proxy without one never pays for it
const requireOnDemand = createRequire(import.meta.url);
let mime: MimeTable | null = null;

/** Files up to this size are read in one call and sent with their head in one write. */
const SMALL_FILE = 128 * 1024;
const SIDECAR_SUFFIX: Record<Encoding, string> = { br: '.br', gzip: '.gz', zstd: '.zst' };
const HAS_PROC_FD = fs.existsSync('/proc/self/fd');

/** What the static handler decided. `upstream`: no file matched and the route falls through. */
export type StaticAnswer =
  | { kind: 'upstream' }
  | { kind: 'response'; status: number; headers: OutgoingHttpHeaders; body: Buffer | fs.ReadStream | string | null; bytes: number };

interface RequestLike {
  method: string;
  headers: Record<string, string | string[] | undefined>;
}

interface Opened {
  fd: number;
  stat: fs.Stats;
  file: string;
}

/** A glob over "/"-separated paths: `*` within a segment, `**` across segments, `?` one character. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === '*') {
      if (glob[i + 1] === '*') {
        i++;
        if (glob[i + 1] === '/') {
          i++;
          re += '(?:.*/)?';
        } else re += '.*';
      } else re += '[^/]*';
    } else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  // a glob without "/" matches the file name anywhere ("*.html"), like .gitignore
  return glob.includes('/') ? new RegExp(`^${re}$`) : new RegExp(`(?:^|/)${re}$`);
}

function etagOf(stat: fs.Stats, enc: Encoding | null): string {
  return `"${stat.size.toString(16)}-${Math.floor(stat.mtimeMs).toString(16)}${enc ? `-${enc}` : ''}"`;
}

function header(req: RequestLike, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(', ') : v;
}

/** RFC 9110 §13.1.2 weak comparison of If-None-Match against our ETag. */
function noneMatch(ifNoneMatch: string, etag: string): boolean {
  if (ifNoneMatch.trim() === '*') return true;
  const opaque = etag.startsWith('W/') ? etag.slice(2) : etag;
  for (const t of ifNoneMatch.split(',')) {
    const tag = t.trim();
    if ((tag.startsWith('W/') ? tag.slice(2) : tag) === opaque) return true;
  }
  return false;
}

/** A single byte range (`bytes=a-b`, `a-`, `-n`); null = ignore the header (multiple or malformed → 200), 'unsatisfiable' → 416. */
export function parseRange(range: string, size: number): { start: number; end: number } | null | 'unsatisfiable' {
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(range);
  if (!m) return null;
  const [, a, b] = m;
  if (a === '' && b === '') return null;
  let start: number;
  let end: number;
  if (a === '') {
    const n = Number(b);
    if (n === 0) return 'unsatisfiable';
    start = Math.max(0, size - n);
    end = size - 1;
  } else {
    start = Number(a);
    end = b === '' ? size - 1 : Math.min(Number(b), size - 1);
    if (b !== '' && Number(b) < start) return null;
  }
  if (start >= size || size === 0) return 'unsatisfiable';
  return { start, end };
}

function contentTypeOf(file: string): string {
  const type = (mime as MimeTable).getType(file) ?? 'application/octet-stream';
  return type.startsWith('text/') || type === 'application/javascript' || type === 'application/json' || type === 'image/svg+xml' ? `${type}; charset=utf-8` : type;
}

function short(status: number, text: string, extra: OutgoingHttpHeaders = {}): StaticAnswer {
  const body = `${status} ${text}\n`;
  return { kind: 'response', status, headers: { 'content-type': 'text/plain; charset=utf-8', ...extra }, body, bytes: 0 };
}

/** One route's static files, compiled. */
export class StaticFiles {
  readonly cfg: StaticConfig;
  private readonly prefix: string;
  private readonly strip: boolean;
  private readonly cacheRules: Array<{ re: RegExp; value: string }>;
  private readonly compression: Compression | null;
  private readonly metrics: EdgeMetrics | null;
  private readonly label: string;
  private realRoot: string | null = null;

  constructor(cfg: StaticConfig, route: { prefix: string; strip: boolean; label: string }, compression: Compression | null, metrics: EdgeMetrics | null) {
    this.cfg = cfg;
    this.prefix = route.prefix;
    this.strip = route.strip;
    this.label = route.label;
    this.cacheRules = cfg.cache_control.map((r) => ({ re: globToRegExp(r.glob), value: r.value }));
    this.compression = compression;
    this.metrics = metrics;
    mime ??= (requireOnDemand('@fastify/send') as { mime: MimeTable }).mime;
  }

  /** The route's upstream is the fallback when try_files ends in "@upstream". */
  get fallsThrough(): boolean {
    return this.cfg.try_files[this.cfg.try_files.length - 1] === '@upstream';
  }

  serve(req: RequestLike, rawPath: string, query: string): StaticAnswer {
    const answer = this.resolve(req, rawPath, query);
    if (answer.kind === 'response' && answer.status < 300) this.metrics?.staticHit(this.label, answer.bytes);
    return answer;
  }

  private resolve(req: RequestLike, rawPath: string, query: string): StaticAnswer {
    let rel = this.strip ? rawPath.slice(this.prefix.length) : rawPath;
    if (rel.charCodeAt(0) !== 47) rel = `/${rel}`;
    let decoded: string;
    try {
      decoded = rel.includes('%') ? decodeURIComponent(rel) : rel;
    } catch {
      return short(400, 'Bad Request');
    }
    // NUL ends a C string; a backslash is a separator elsewhere: neither belongs in a URL path of a file
    if (decoded.includes('\0') || decoded.includes('\\')) return short(400, 'Bad Request');
    const segments = decoded.split('/');
    for (const s of segments) {
      if (s === '..' || s === '.') return short(400, 'Bad Request');
      if (s.charCodeAt(0) === 46 && this.cfg.dotfiles === 'deny') return short(403, 'Forbidden');
    }
    const method = req.method;
    const readOnly = method === 'GET' || method === 'HEAD';
    if (this.realRoot === null) {
      try {
        this.realRoot = fs.realpathSync.native(this.cfg.root);
      } catch {
        return this.fallsThrough ? { kind: 'upstream' } : short(404, 'Not Found');
      }
    }
    const tries = this.cfg.try_files;
    for (let i = 0; i < tries.length; i++) {
      const t = tries[i];
      if (t === '@upstream') return { kind: 'upstream' };
      if (t.charCodeAt(0) === 61) {
        const status = Number(t.slice(1));
        return short(status, status === 404 ? 'Not Found' : 'Error');
      }
      const wantDir = t.endsWith('/');
      const candidate = t.replaceAll('$uri', decoded);
      const file = path.join(this.cfg.root, candidate);
      const opened = this.open(file);
      if (opened === null) continue;
      if (opened.stat.isDirectory()) {
        fs.closeSync(opened.fd);
        if (!wantDir) continue;
        if (!decoded.endsWith('/')) {
          // NGINX answers a directory without its slash with a redirect to it
          const location = `${rawPath}/${query}`;
          return short(301, 'Moved Permanently', { location });
        }
        for (const name of this.cfg.index) {
          const idx = this.open(path.join(file, name));
          if (idx === null) continue;
          if (!idx.stat.isFile()) {
            fs.closeSync(idx.fd);
            continue;
          }
          if (!readOnly) return this.notAllowed(idx);
          return this.send(req, idx, `${decoded}${name}`);
        }
        continue;
      }
      if (!opened.stat.isFile()) {
        fs.closeSync(opened.fd);
        continue;
      }
      if (!readOnly) return this.notAllowed(opened);
      return this.send(req, opened, candidate);
    }
    return short(404, 'Not Found');
  }

  private notAllowed(o: Opened): StaticAnswer {
    fs.closeSync(o.fd);
    if (this.fallsThrough) return { kind: 'upstream' };
    return short(405, 'Method Not Allowed', { allow: 'GET, HEAD' });
  }

  /**
   * Opens and fstats `file`; null when absent, unreadable, or really outside the root. Blocking
   * calls, as NGINX makes them (without aio): on a page-cached file each is a few µs, where a trip
   * through libuv's thread pool costs the event loop 20-35 µs (measured: open, fstat, readlink,
   * read and close through the pool were two thirds of the CPU of a 4 KiB file). Large files are
   * still read asynchronously, as a stream.
   */
  private open(file: string): Opened | null {
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch {
      return null;
    }
    try {
      const stat = fs.fstatSync(fd);
      // the descriptor's real path (symlinks followed, as the kernel did): it must lie under the real root
      const real = HAS_PROC_FD ? fs.readlinkSync(`/proc/self/fd/${fd}`) : fs.realpathSync.native(file);
      const root = this.realRoot as string;
      if (real === root || real.startsWith(root === '/' ? '/' : `${root}/`)) return { fd, stat, file };
    } catch {
      // fall through: treated as absent
    }
    fs.closeSync(fd);
    return null;
  }

  private send(req: RequestLike, opened: Opened, relPath: string): StaticAnswer {
    let chosen = opened;
    let enc: Encoding | null = null;
    const headers: OutgoingHttpHeaders = {};
    const pre = this.cfg.precompressed;
    if (pre.length > 0) {
      headers.vary = 'Accept-Encoding';
      const want = negotiateEncoding(header(req, 'accept-encoding'), pre);
      if (want !== null) {
        // the client's first choice among the sidecars that exist
        const order = [want, ...pre.filter((e) => e !== want && negotiateEncoding(header(req, 'accept-encoding'), [e]) !== null)];
        for (const e of order) {
          const side = this.open(opened.file + SIDECAR_SUFFIX[e]);
          if (side === null) continue;
          if (!side.stat.isFile()) {
            fs.closeSync(side.fd);
            continue;
          }
          fs.closeSync(opened.fd);
          chosen = side;
          enc = e;
          break;
        }
      }
    }
    const stat = chosen.stat;
    const etag = etagOf(stat, enc);
    const lastModified = stat.mtime.toUTCString();
    headers['content-type'] = contentTypeOf(opened.file);
    headers.etag = etag;
    headers['last-modified'] = lastModified;
    headers['accept-ranges'] = 'bytes';
    if (enc !== null) headers['content-encoding'] = enc;
    const ruleTarget = relPath.charCodeAt(0) === 47 ? relPath.slice(1) : relPath;
    for (const rule of this.cacheRules) {
      if (rule.re.test(ruleTarget)) {
        headers['cache-control'] = rule.value;
        break;
      }
    }
    // RFC 9110 §13.2.2 order: If-Match, If-Unmodified-Since, If-None-Match, If-Modified-Since, If-Range
    const ifMatch = header(req, 'if-match');
    if (ifMatch !== undefined && ifMatch.trim() !== '*' && !ifMatch.split(',').some((t) => t.trim() === etag)) return this.done(chosen, 412, headers);
    const ius = header(req, 'if-unmodified-since');
    if (ifMatch === undefined && ius !== undefined) {
      const t = Date.parse(ius);
      if (!Number.isNaN(t) && Math.floor(stat.mtimeMs / 1000) * 1000 > t) return this.done(chosen, 412, headers);
    }
    const inm = header(req, 'if-none-match');
    if (inm !== undefined) {
      if (noneMatch(inm, etag)) return this.done(chosen, 304, headers);
    } else {
      const ims = header(req, 'if-modified-since');
      if (ims !== undefined) {
        const t = Date.parse(ims);
        if (!Number.isNaN(t) && Math.floor(stat.mtimeMs / 1000) * 1000 <= t) return this.done(chosen, 304, headers);
      }
    }
    let start = 0;
    let end = stat.size - 1;
    let status = 200;
    const range = header(req, 'range');
    if (range !== undefined && req.method === 'GET') {
      const ifRange = header(req, 'if-range');
      const fresh = ifRange === undefined || (ifRange.startsWith('"') ? ifRange.trim() === etag : ifRange.trim() === lastModified);
      if (fresh) {
        const r = parseRange(range, stat.size);
        if (r === 'unsatisfiable') {
          fs.closeSync(chosen.fd);
          return short(416, 'Range Not Satisfiable', { 'content-range': `bytes */${stat.size}` });
        }
        if (r !== null) {
          start = r.start;
          end = r.end;
          status = 206;
          headers['content-range'] = `bytes ${start}-${end}/${stat.size}`;
        }
      }
    }
    const length = Math.max(0, end - start + 1);
    const compress = enc === null && this.compression !== null && status === 200;
    if (req.method === 'HEAD') {
      headers['content-length'] = length;
      if (compress) (this.compression as Compression).apply('HEAD', undefined, 200, objectHead(headers), null);
      return this.done(chosen, status, headers);
    }
    let body: Buffer | fs.ReadStream;
    if (length <= SMALL_FILE) {
      try {
        body = readExactly(chosen.fd, start, length);
      } finally {
        fs.closeSync(chosen.fd);
      }
    } else {
      body = fs.createReadStream('', { fd: chosen.fd, start, end, highWaterMark: 64 * 1024, autoClose: true });
    }
    headers['content-length'] = Buffer.isBuffer(body) ? body.length : length;
    if (compress) {
      const out = (this.compression as Compression).apply('GET', header(req, 'accept-encoding'), 200, objectHead(headers), body);
      return { kind: 'response', status, headers, body: out as Buffer | fs.ReadStream, bytes: length };
    }
    return { kind: 'response', status, headers, body, bytes: length };
  }

  private done(o: Opened, status: number, headers: OutgoingHttpHeaders): StaticAnswer {
    fs.closeSync(o.fd);
    if (status === 304) {
      delete headers['content-encoding'];
      return { kind: 'response', status, headers, body: null, bytes: 0 };
    }
    if (status === 412) return short(412, 'Precondition Failed');
    return { kind: 'response', status, headers, body: null, bytes: 0 };
  }
}

function readExactly(fd: number, position: number, length: number): Buffer {
  const buf = Buffer.allocUnsafe(length);
  let got = 0;
  while (got < length) {
    const n = fs.readSync(fd, buf, got, length - got, position + got);
    // the file shrank since fstat: send what is there (Content-Length follows the buffer)
    if (n === 0) return buf.subarray(0, got);
    got += n;
  }
  return buf;
}

