// The one shape both protocols hand to the app adapters: a request (vars and
// a readable body) and a response (respond() for the head, the writable side
// for the body). A native GatewireStream is one as-is; a uwsgi classic
// connection is wrapped by UwsgiExchange. The adapters (fetch-adapter.ts,
// node-adapter.ts) never know which protocol they are talking to.
import type { Duplex } from 'node:stream';
import type { Vars } from '../protocol/vars.ts';

export interface AppExchange extends Duplex {
  readonly vars: Vars;
  /** Which wire the request came on; read where the request head is decoded, never by the adapters. */
  readonly protocol: 'native' | 'uwsgi';
  readonly headersSent: boolean;
  /** Native streams only: the request asked for an upgrade (PROTOCOL.md 4.3); a 101 makes it a tunnel. */
  readonly upgrade?: boolean;
  /** headers: flat [name, value, ...], lower-case names, repeats (set-cookie) as repeated pairs. */
  respond(status: number, headers: Vars, opts?: { endStream?: boolean }): void;
  /** Optional: head, a whole body (one buffer, or pieces in order) and the end in one write (what respond() + end(body) do, cheaper). */
  respondWhole?(status: number, headers: Vars, body: Uint8Array | readonly Uint8Array[]): void;
  /** Abort the exchange (stream RESET / connection close): the client sees a truncated response, never a clean short one. */
  reset(code?: number): void;
  /** The response is complete and the rest of the request body is not wanted: stop it (native: RESET CANCEL; uwsgi: read and drop it). */
  discardBody(): void;
  /**
   * Optional: the whole body is wanted at once, so its bytes go to `sink` as they arrive (valid
   * during the call only) instead of through the readable side; 'end' and 'close' still come.
   */
  takeBody?(sink: (chunk: Buffer, start: number, end: number) => void): void;
}

/** What the adapters read from the vars in one pass over them. */
export interface RequestHead {
  method: string;
  /** Request target, percent-encoded where the client sent raw bytes (always starts with '/', or is '*'). */
  target: string;
  scheme: 'http' | 'https';
  host: string;
  remoteAddr: string;
  remotePort: number;
  /** -1: a body of unknown length may follow (native requests without CONTENT_LENGTH). */
  contentLength: number;
  protocol: string;
}

// Bytes outside visible ASCII (the vars carry raw bytes as latin1 code units)
// and the few ASCII characters a URL parser would mangle or reject.
const NEEDS_ENCODING = /[^\x21-\x7e]|[#"<>\\^`{|}]/;

/** Percent-encodes every byte the client sent raw (non-ASCII UTF-8 bytes, spaces). Keeps existing %XX escapes. */
export function encodeTarget(raw: string): string {
  if (!NEEDS_ENCODING.test(raw)) return raw;
  let out = '';
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c > 0x20 && c < 0x7f && c !== 0x23 && c !== 0x22 && c !== 0x3c && c !== 0x3e && c !== 0x5c && c !== 0x5e && c !== 0x60 && c !== 0x7b && c !== 0x7c && c !== 0x7d) {
      out += raw[i];
    } else {
      // Only '#' inside the query would be meaningful, but a fragment never reaches a server: encode it too.
      out += `%${(c & 0xff).toString(16).toUpperCase().padStart(2, '0')}`;
    }
  }
  return out;
}

/** `wire`: a uwsgi request without CONTENT_LENGTH has no body (WSGI); a native one may stream a body of unknown length. */
export function readRequestHead(vars: Vars, wire: 'native' | 'uwsgi'): RequestHead {
  let method = 'GET';
  let uri: string | undefined;
  let pathInfo = '';
  let query = '';
  let https = false;
  let scheme = '';
  let httpHost = '';
  let serverName = '';
  let serverPort = '';
  let remoteAddr = '';
  let remotePort = '';
  let contentLength = '';
  let protocol = 'HTTP/1.1';
  for (let i = 0; i < vars.length; i += 2) {
    const k = vars[i];
    const v = vars[i + 1];
    switch (k) {
      case 'REQUEST_METHOD':
        method = v;
        break;
      case 'REQUEST_URI':
        uri = v;
        break;
      case 'PATH_INFO':
        pathInfo = v;
        break;
      case 'QUERY_STRING':
        query = v;
        break;
      case 'HTTPS':
        https = v === 'on' || v === '1' || v === 'ON';
        break;
      case 'REQUEST_SCHEME':
      case 'UWSGI_SCHEME':
        scheme = v;
        break;
      case 'HTTP_HOST':
        if (httpHost === '') httpHost = v;
        break;
      case 'SERVER_NAME':
        serverName = v;
        break;
      case 'SERVER_PORT':
        serverPort = v;
        break;
      case 'REMOTE_ADDR':
        remoteAddr = v;
        break;
      case 'REMOTE_PORT':
        remotePort = v;
        break;
      case 'CONTENT_LENGTH':
        contentLength = v;
        break;
      case 'SERVER_PROTOCOL':
        protocol = v;
        break;
    }
  }
  const secure = https || scheme === 'https';
  let target: string;
  if (uri !== undefined && uri !== '') {
    if (uri.charCodeAt(0) === 47 /* / */ || uri === '*') target = encodeTarget(uri);
    else {
      // absolute-form ("http://host/path"): keep only the path and query
      const at = uri.indexOf('://');
      const slash = at > 0 ? uri.indexOf('/', at + 3) : -1;
      target = slash < 0 ? '/' : encodeTarget(uri.slice(slash));
    }
  } else {
    target = encodeTarget((pathInfo === '' ? '/' : pathInfo) + (query === '' ? '' : `?${query}`));
  }
  let host = httpHost;
  if (host === '') {
    host = serverName || 'localhost';
    if (serverPort !== '' && serverPort !== (secure ? '443' : '80')) host += `:${serverPort}`;
  }
  const cl = contentLength === '' ? (wire === 'uwsgi' ? 0 : -1) : Number(contentLength);
  return {
    method,
    target,
    scheme: secure ? 'https' : 'http',
    host,
    remoteAddr,
    remotePort: remotePort === '' ? 0 : Number(remotePort) || 0,
    contentLength: Number.isFinite(cl) ? cl : -1,
    protocol,
  };
}

/** Statuses and methods whose response never has a body (RFC 9110 §6.4.1). */
export function bodyless(method: string, status: number): boolean {
  return method === 'HEAD' || status === 204 || status === 304 || (status >= 100 && status < 200);
}
