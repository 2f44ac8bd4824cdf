// Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection and never
// cross a proxy or gateway in either direction. The one list for the proxy (both
// directions, every transport) and the appserver.

export const HOP_BY_HOP_HEADERS: readonly string[] = ['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade'];

export const HOP_BY_HOP = new Set(HOP_BY_HOP_HEADERS);

/** Lower-case names a Connection header value lists (they are hop-by-hop too). */
export function connectionListed(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  const out: string[] = [];
  const values = typeof value === 'string' ? [value] : value;
  for (const v of values) {
    for (const token of v.split(',')) {
      const t = token.trim().toLowerCase();
      if (t !== '' && t !== 'close' && t !== 'keep-alive') out.push(t);
    }
  }
  return out;
}
