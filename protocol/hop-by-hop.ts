// Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection and never
// cross a proxy or gateway in either direction. The one list for the proxy (both
// directions, every transport) and the appserver.

export const HOP_BY_HOP: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade']);
