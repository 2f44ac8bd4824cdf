// What the request and response heads look like on the other side of the
// proxy: the one implementation of hop-by-hop removal and X-Forwarded-* for
// every transport. The request head becomes a flat lower-case [name, value, ...]
// list built once from the client's raw headers (undici takes it as is; the
// vars builder of the gatewire and uwsgi transports reads it once).
import type { IncomingMessage } from 'node:http';
import { HOP_BY_HOP } from '../protocol/hop-by-hop.ts';

// Names Node's parser keeps only once (IncomingMessage#headers drops later copies): the upstream
// sees one, the first, as an app reading req.headers would.
const SINGLE_VALUED = new Set([
  'age', 'authorization', 'content-length', 'content-type', 'etag', 'expires', 'from', 'host', 'if-modified-since',
  'if-unmodified-since', 'last-modified', 'location', 'max-forwards', 'proxy-authorization', 'referer', 'retry-after', 'server', 'user-agent',
]);

export interface ForwardingContext {
  clientIp: string;
  scheme: 'http' | 'https';
  requestId: string;
  /** Whether the client address belongs to trust_proxy: its X-Forwarded-* are kept and extended. */
  trusted: boolean;
  /** The path prefix strip_prefix removed ('' when none): X-Forwarded-Prefix for HTTP upstreams. */
  prefix: string;
  /** Leave Content-Length out: the body is not forwarded (GET/HEAD). */
  dropContentLength: boolean;
}

/**
 * The client's head as it goes upstream: hop-by-hop names and those the Connection header lists
 * left out, Expect left out (the proxy answers 100-continue itself: Node sends it to the client
 * before the body is read, and no upstream client library needs it), repeats of single-valued names
 * dropped, HTTP/2 pseudo-headers turned into Host, then X-Forwarded-For/-Proto/-Host (kept and
 * extended only from a trusted peer), X-Forwarded-Prefix and X-Request-Id.
 */
export function forwardedHeaders(req: IncomingMessage, ctx: ForwardingContext): string[] {
  const src = req.rawHeaders;
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
  let xff: string | null = null;
  let xfProto: string | null = null;
  let xfHost: string | null = null;
  let host: string | null = null;
  for (let i = 0; i < src.length; i += 2) {
    const lower = src[i].toLowerCase();
    const value = src[i + 1];
    if (lower.charCodeAt(0) === 58 /* : */) {
      if (lower === ':authority' && host === null) host = value;
      continue;
    }
    if (HOP_BY_HOP.has(lower) || lower === 'expect' || lower === 'x-request-id') continue;
    if (listed?.includes(lower)) continue;
    if (lower.startsWith('x-forwarded-')) {
      if (lower === 'x-forwarded-for') xff = xff === null ? value : `${xff}, ${value}`;
      else if (lower === 'x-forwarded-proto') xfProto ??= value;
      else if (lower === 'x-forwarded-host') xfHost ??= value;
      else if (lower === 'x-forwarded-prefix') continue;
      else out.push(lower, value);
      continue;
    }
    if (SINGLE_VALUED.has(lower)) {
      if (ctx.dropContentLength && lower === 'content-length') continue;
      if (seen?.includes(lower)) continue;
      (seen ??= []).push(lower);
      if (lower === 'host') host = value;
    }
    out.push(lower, value);
  }
  if (req.httpVersionMajor === 2 && host !== null && !seen?.includes('host')) out.push('host', host);
  const trusted = ctx.trusted;
  out.push('x-forwarded-for', trusted && xff !== null ? `${xff}, ${ctx.clientIp}` : ctx.clientIp);
  out.push('x-forwarded-proto', trusted && xfProto !== null ? xfProto : ctx.scheme);
  const fwdHost = trusted && xfHost !== null ? xfHost : host;
  if (fwdHost !== null) out.push('x-forwarded-host', fwdHost);
  if (ctx.prefix !== '') out.push('x-forwarded-prefix', ctx.prefix);
  out.push('x-request-id', ctx.requestId);
  return out;
}

/** The upstream's response head as the client gets it: hop-by-hop names removed, X-Request-Id always set. */
export function rewriteResponseHeaders(headers: Record<string, unknown>, requestId: string): Record<string, unknown> {
  for (const name of HOP_BY_HOP) if (headers[name] !== undefined) delete headers[name];
  if (headers['x-request-id'] === undefined) headers['x-request-id'] = requestId;
  return headers;
}
