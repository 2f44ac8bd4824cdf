// The Transport contract between the dispatcher and the three wire protocols
// (gatewire native, uwsgi classic, HTTP/1.1), plus what they share: parsing a
// host address, turning a request into CGI vars, turning response vars into a
// header object, and one coarse timer that enforces read timeouts.
import type { Readable } from 'node:stream';
import { varsFromHttpRequest } from '../../protocol/uwsgi.ts';
import type { Vars } from '../../protocol/vars.ts';
import type { Host } from '../hosts.ts';

export interface TransportRequest {
  method: string;
  /** Raw path + query as sent upstream. */
  path: string;
  /** Lowercase names; undefined values are skipped (reply-from blanks hop-by-hop ones that way). */
  headers: Record<string, string | string[] | undefined>;
  body: Readable | null;
  /**
   * The whole request body, read before the first try (a small body announced by Content-Length,
   * see body_buffer_size); `body` is then null. Every try sends it again, so a try the server never
   * processed can be replayed on another connection or server.
   */
  bodyBuffer?: Buffer | null;
  /**
   * The client's raw header list (Node's rawHeaders). When set, vars are built straight from it
   * (hop-by-hop names and the names in `forwarded` left out, then `forwarded` appended) instead of
   * from `headers`: no intermediate header objects per request. `headers` still answers lookups.
   */
  rawHeaders?: string[] | null;
  /** Lower-case name/value pairs that replace the client's (X-Forwarded-*, X-Request-Id); with rawHeaders. */
  forwarded?: string[] | null;
  /** With rawHeaders: leave Content-Length out (a GET/HEAD whose body is not forwarded). */
  dropContentLength?: boolean;
  remoteAddress: string;
  remotePort: number;
  scheme: 'http' | 'https';
  serverName: string;
  serverPort: number;
  readTimeoutMs: number;
  /** Set by the transport as soon as it read a byte of `body`: from then on no retry can replay it. */
  bodyStarted: boolean;
  /** Set by the owner when the client went away; the transport then cancels at once through `cancel`. */
  aborted: boolean;
  /** Installed by the transport for the exchange in progress; called by the owner on client abort. */
  cancel: (() => void) | null;
  /**
   * Optional measure of forward progress downstream (bytes handed to the client so far). A transport
   * whose response body is consumed by the client counts a change as activity, so a slow client is
   * never mistaken for a silent upstream.
   */
  progress?(): number;
}

export interface TransportResponse {
  statusCode: number;
  headers: Record<string, string | string[]>;
  body: Readable;
  /**
   * Optional: when the whole body has already arrived and is exactly `expectedLength` bytes, returns
   * it and the exchange is over (`body` must not be used any more); otherwise null and the body
   * streams as usual. A small response then reaches the client as one buffer, without a stream
   * pipe and its end-of-stream listeners on both sides (most of a small proxied request's cost).
   */
  takeWholeBody?(expectedLength: number): Buffer | null;
}

export interface Transport {
  request(host: Host, req: TransportRequest): Promise<TransportResponse>;
  /** Closes the connections kept for a host (removed from the pool and drained). */
  closeHost(host: Host): void;
  /** Closes every connection once the exchanges in flight ended (or at once with force). */
  close(force?: boolean): Promise<void>;
}

export type Address = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

/** "unix:/p.sock", "host:port", "[::1]:port", "http://host:port". */
export function parseAddress(address: string): Address {
  if (address.startsWith('unix:')) return { kind: 'unix', path: address.slice(5) };
  let a = address;
  const scheme = a.indexOf('://');
  if (scheme >= 0) a = a.slice(scheme + 3);
  const slash = a.indexOf('/');
  if (slash >= 0) a = a.slice(0, slash);
  const colon = a.lastIndexOf(':');
  if (colon < 0 || a.endsWith(']')) return { kind: 'tcp', host: a.replace(/^\[|\]$/g, ''), port: 80 };
  return { kind: 'tcp', host: a.slice(0, colon).replace(/^\[|\]$/g, ''), port: Number(a.slice(colon + 1)) };
}

/**
 * CGI/uwsgi vars for a request, exactly as NGINX's uwsgi_params sends them (the codec's
 * varsFromHttpRequest); `contentLength` overrides CONTENT_LENGTH (a buffered chunked body).
 */
export function requestVars(req: TransportRequest, contentLength?: number): Vars {
  const raw: string[] = req.rawHeaders != null ? forwardedRawHeaders(req.rawHeaders, req.forwarded ?? null, req.dropContentLength === true) : headerList(req.headers);
  return varsFromHttpRequest({
    method: req.method,
    url: req.path,
    httpVersion: '1.1',
    rawHeaders: raw,
    remoteAddress: req.remoteAddress,
    remotePort: req.remotePort,
    serverName: req.serverName,
    serverPort: req.serverPort,
    scheme: req.scheme,
    contentLength,
  });
}

// Hop-by-hop headers (RFC 9110 §7.6.1) never cross the proxy.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade']);
// Names Node's parser keeps only once (IncomingMessage#headers drops later copies): the upstream
// sees what the object-based path (and reply-from's http transport) would send.
const SINGLE_VALUED = new Set([
  'age', 'authorization', 'content-length', 'content-type', 'etag', 'expires', 'from', 'host', 'if-modified-since',
  'if-unmodified-since', 'last-modified', 'location', 'max-forwards', 'proxy-authorization', 'referer', 'retry-after', 'server', 'user-agent',
]);

/**
 * The client's raw headers as they go upstream: hop-by-hop names, names the Connection header
 * lists, names in `forwarded` (replaced) and repeats of single-valued names left out; `forwarded`
 * appended. One array per request (the vars builder reads it once).
 */
function forwardedRawHeaders(src: string[], forwarded: string[] | null, dropContentLength: boolean): string[] {
  let listed: string[] | null = null;
  for (let i = 0; i < src.length; i += 2) {
    const name = src[i];
    if (name.length === 10 && name.toLowerCase() === 'connection') {
      for (const token of src[i + 1].split(',')) {
        const t = token.trim().toLowerCase();
        if (t !== '') (listed ??= []).push(t);
      }
    }
  }
  const out: string[] = [];
  let seen: string[] | null = null;
  for (let i = 0; i < src.length; i += 2) {
    const lower = src[i].toLowerCase();
    if (HOP_BY_HOP.has(lower)) continue;
    if (listed?.includes(lower)) continue;
    if (forwarded !== null && pairIndex(forwarded, lower) >= 0) continue;
    if (SINGLE_VALUED.has(lower)) {
      if (dropContentLength && lower === 'content-length') continue;
      if (seen?.includes(lower)) continue;
      (seen ??= []).push(lower);
    }
    out.push(lower, src[i + 1]);
  }
  if (forwarded !== null) for (let i = 0; i < forwarded.length; i++) out.push(forwarded[i]);
  return out;
}

function pairIndex(pairs: string[], name: string): number {
  for (let i = 0; i < pairs.length; i += 2) if (pairs[i] === name) return i;
  return -1;
}

function headerList(headers: Record<string, string | string[] | undefined>): string[] {
  const raw: string[] = [];
  for (const name in headers) {
    const v = headers[name];
    if (v === undefined) continue;
    if (typeof v === 'string') raw.push(name, v);
    else for (let i = 0; i < v.length; i++) raw.push(name, v[i]);
  }
  return raw;
}

/** Response vars [name, value, ...] → header object; repeated names (set-cookie) become arrays. */
export function headersFromVars(vars: Vars, start = 0): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (let i = start; i + 1 < vars.length; i += 2) {
    const name = vars[i].toLowerCase();
    const prev = out[name];
    if (prev === undefined) out[name] = vars[i + 1];
    else if (typeof prev === 'string') out[name] = [prev, vars[i + 1]];
    else prev.push(vars[i + 1]);
  }
  return out;
}

/** Anything with a deadline check, swept by a TimeoutSweeper. */
export interface Timed {
  checkTimeout(now: number): void;
}

/**
 * One coarse interval per transport instead of a timer per request: read
 * timeouts are seconds long, so checking every `granularityMs` costs nothing
 * per request and fires at most that late (NGINX keeps one timer tree for the
 * same reason).
 */
export class TimeoutSweeper {
  private readonly entries = new Set<Timed>();
  private timer: NodeJS.Timeout | null = null;
  private readonly granularityMs: number;
  constructor(granularityMs = 200) {
    this.granularityMs = granularityMs;
  }
  add(e: Timed): void {
    this.entries.add(e);
    if (this.timer === null) {
      this.timer = setInterval(() => this.sweep(), this.granularityMs);
      this.timer.unref();
    }
  }
  delete(e: Timed): void {
    this.entries.delete(e);
  }
  get size(): number {
    return this.entries.size;
  }
  private sweep(): void {
    if (this.entries.size === 0) {
      if (this.timer) clearInterval(this.timer);
      this.timer = null;
      return;
    }
    const now = Date.now();
    for (const e of this.entries) e.checkTimeout(now);
  }
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.entries.clear();
  }
}
