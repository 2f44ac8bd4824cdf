// Socket addresses as gatewire spells them: "host:port", "[::1]:port",
// "unix:/path.sock" (and, for HTTP upstreams, "http://host:port"). The one
// parser for the proxy's servers, the transports and the config checks; the
// Host header's hostname; and the spelling of an address a listener bound.
import net from 'node:net';

export type SocketTarget = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

/** A normalised address (see normaliseAddress) → where to connect. Throws on a malformed one. */
export function parseAddress(address: string): SocketTarget {
  if (address.startsWith('unix:')) return { kind: 'unix', path: address.slice(5) };
  const rest = address.replace(/^http:\/\//i, '').replace(/\/$/, '');
  const i = rest.lastIndexOf(':');
  if (i <= 0 || rest.endsWith(']')) throw new Error(`not a host:port address: ${address}`);
  const host = rest.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(rest.slice(i + 1));
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`bad port in address: ${address}`);
  return { kind: 'tcp', host, port };
}

/** The normalised spelling: IPv6 in brackets, no scheme. */
export function formatAddress(target: SocketTarget): string {
  if (target.kind === 'unix') return `unix:${target.path}`;
  return net.isIPv6(target.host) ? `[${target.host}]:${target.port}` : `${target.host}:${target.port}`;
}

/** "host:port", "[v6]:port", "unix:/abs/path" (and "http://host:port" for http) → normalised form, or an error text with the fix. */
export function normaliseAddress(address: string, protocol: string): { address: string } | { error: string } {
  const bad = {
    error: `${JSON.stringify(address)} is not a valid address (use "host:port", "[::1]:port" or "unix:/path.sock"${protocol === 'http' ? ' or "http://host:port"' : ''})`,
  };
  if (address.startsWith('unix:')) {
    const p = address.slice(5);
    if (!p.startsWith('/') || p.length < 2) return { error: `${JSON.stringify(address)} is not a valid address (a Unix socket needs an absolute path: "unix:/path.sock")` };
    return { address: `unix:${p}` };
  }
  let rest = address;
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(address);
  if (scheme) {
    if (scheme[1].toLowerCase() !== 'http' || protocol !== 'http')
      return {
        error: `${JSON.stringify(address)} is not a valid address (${scheme[1].toLowerCase() === 'http' ? `a URL is only accepted with protocol: http; write "${address.slice(scheme[0].length).replace(/\/.*$/, '')}"` : 'only http:// URLs are accepted'})`,
      };
    rest = address.slice(scheme[0].length).replace(/\/$/, '');
    if (rest.includes('/')) return { error: `${JSON.stringify(address)} is not a valid address (a server address has no path; write "http://${rest.replace(/\/.*$/, '')}")` };
  }
  let host: string;
  let portText: string;
  const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(rest);
  if (v6) {
    host = v6[1];
    portText = v6[2];
    if (net.isIPv6(host) === false) return bad;
  } else {
    const i = rest.lastIndexOf(':');
    if (i <= 0) {
      if (/^[^:]+$/.test(rest) && rest.length > 0) return { error: `${JSON.stringify(address)} has no port (write "${rest}:PORT")` };
      return bad;
    }
    host = rest.slice(0, i);
    portText = rest.slice(i + 1);
    if (host.includes(':')) return { error: `${JSON.stringify(address)} is not a valid address (write an IPv6 address in brackets: "[${host}]:${portText}")` };
    if (!net.isIPv4(host) && !/^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?$/.test(host) && !/^[A-Za-z0-9_.-]+$/.test(host))
      return bad;
  }
  if (!/^\d+$/.test(portText)) return bad;
  const port = Number(portText);
  if (port < 1 || port > 65535) return { error: `${JSON.stringify(address)} has port ${port} outside 1-65535` };
  return { address: net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}` };
}

/** A name server address: an IP, "ip:port" or "[v6]:port". */
export function validNameServer(s: string): boolean {
  if (net.isIP(s)) return true;
  const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(s);
  if (v6) return net.isIPv6(v6[1]) && Number(v6[2]) > 0 && Number(v6[2]) < 65536;
  const m = /^([^:]+):(\d+)$/.exec(s);
  return !!m && net.isIPv4(m[1]) && Number(m[2]) > 0 && Number(m[2]) < 65536;
}

/** The hostname of a Host header value, lower-cased, without the port ("[::1]" keeps its brackets). */
export function hostnameOf(host: string): string {
  if (host.charCodeAt(0) === 91) {
    const end = host.indexOf(']');
    return host.slice(0, end + 1).toLowerCase();
  }
  const colon = host.indexOf(':');
  return (colon < 0 ? host : host.slice(0, colon)).toLowerCase();
}

/** "http://HOST:PORT" for what a TCP server actually bound (0.0.0.0 stays 0.0.0.0; IPv6 in brackets). */
export function boundUrl(address: net.AddressInfo | string | null, scheme = 'http'): string {
  if (address === null) return `${scheme}://unknown`;
  if (typeof address === 'string') return `unix:${address}`;
  const host = address.family === 'IPv6' || net.isIPv6(address.address) ? `[${address.address}]` : address.address;
  return `${scheme}://${host}:${address.port}`;
}
