// The key a rate or connection limit counts by (NGINX's `limit_req_zone $key`): the client address,
// a request header or a cookie.
import type { IncomingHttpHeaders } from 'node:http';
import type { LimitKey } from './config/edge.ts';

/**
 * The client's address as NGINX's realip module with `real_ip_recursive on` finds it: the peer,
 * or, when the peer is a trusted proxy (trust_proxy), the rightmost X-Forwarded-For entry that is
 * not itself trusted. A client cannot dodge its limit by sending its own X-Forwarded-For: only
 * entries appended by trusted proxies are skipped.
 */
export function clientAddress(peer: string, headers: IncomingHttpHeaders, trusted: (ip: string) => boolean): string {
  if (!trusted(peer)) return peer;
  const xff = headers['x-forwarded-for'];
  if (xff === undefined) return peer;
  const list = (Array.isArray(xff) ? xff.join(',') : xff).split(',');
  let addr = peer;
  for (let i = list.length - 1; i >= 0; i--) {
    const a = list[i].trim();
    if (a.length === 0) continue;
    addr = a;
    if (!trusted(a)) return a;
  }
  return addr;
}

function cookie(headers: IncomingHttpHeaders, name: string): string | undefined {
  const raw = headers.cookie;
  if (raw === undefined) return undefined;
  for (const part of raw.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** The key's value for one request; '' when the header or cookie is absent (NGINX: an empty key is not limited). */
export function limitKeyValue(key: LimitKey, peer: string, headers: IncomingHttpHeaders, trusted: (ip: string) => boolean): string {
  if ('header' in key) {
    const v = headers[key.header];
    return Array.isArray(v) ? v.join(',') : (v ?? '');
  }
  if ('cookie' in key) return cookie(headers, key.cookie) ?? '';
  const addr = clientAddress(peer, headers, trusted);
  // one client, one key: an IPv4 peer on a dual-stack socket
  return addr.startsWith('::ffff:') && addr.includes('.') ? addr.slice(7) : addr;
}
