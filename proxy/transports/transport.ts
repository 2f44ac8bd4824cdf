// The contract between the exchange (the proxy's retry loop) and the three wire
// protocols (gatewire native, uwsgi classic, HTTP/1.1): a TransportRequest in,
// a TransportResponse (head + body stream) or an UpstreamError out. What the
// transports share lives in base.ts.
import type { Readable } from 'node:stream';
import { varsFromHttpRequest } from '../../protocol/uwsgi.ts';
import type { Vars } from '../../protocol/vars.ts';
import type { Host } from '../hosts.ts';

export interface TransportRequest {
  method: string;
  /** Raw path + query as sent upstream (strip_prefix already applied). */
  path: string;
  /** Lower-case [name, value, ...] as they go upstream (forwarding.ts forwardedHeaders). */
  upstreamHeaders: string[];
  /** The client's body, streamed; null when there is none or it was read whole into bodyBuffer. */
  body: Readable | null;
  /**
   * The whole request body, read before the first try (a small body announced by Content-Length,
   * see body_buffer_size). Every try sends it again, so a try the server never processed can be
   * replayed on another connection or server.
   */
  bodyBuffer: Buffer | null;
  /** The announced Content-Length; -1 for a chunked body of unknown length. */
  contentLength: number;
  remoteAddress: string;
  remotePort: number;
  scheme: 'http' | 'https';
  serverName: string;
  serverPort: number;
  /** The prefix strip_prefix removed ('' when none): SCRIPT_NAME for gatewire and uwsgi apps. */
  scriptName: string;
  /** timeouts.read: no response head, or no response body bytes, for this long → 504. */
  readTimeoutMs: number;
  /** timeouts.send: the upstream accepted no request body bytes for this long → 504. */
  sendTimeoutMs: number;
  /** Aborted when the client went away or the exchange gave up: the transport cancels at once. */
  signal: AbortSignal;
  /** Set by the transport as soon as it read a byte of `body`: from then on no retry can replay it. */
  bodyStarted: boolean;
  /**
   * Bytes handed to the client so far: a transport whose response body is consumed by the client
   * counts a change as activity, so a slow client is never mistaken for a silent upstream.
   */
  progress(): number;
}

export interface TransportResponse {
  statusCode: number;
  headers: Record<string, string | string[]>;
  body: Readable;
  /**
   * Optional: when the whole body arrived with the head (see wholeBodyLength) and it is exactly
   * `expectedLength` bytes, returns it and `body` must not be used any more; otherwise null and the
   * body streams as usual. A small response then reaches the client as one buffer, head and body in
   * one write, without a stream pipe and its end-of-stream listeners on both sides (most of a small
   * proxied request's cost).
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

/**
 * CGI/uwsgi vars for a request, exactly as NGINX's uwsgi_params sends them (the codec's
 * varsFromHttpRequest); `contentLength` overrides CONTENT_LENGTH (a buffered chunked body).
 */
export function requestVars(req: TransportRequest, contentLength?: number): Vars {
  return varsFromHttpRequest({
    method: req.method,
    url: req.path,
    httpVersion: '1.1',
    rawHeaders: req.upstreamHeaders,
    remoteAddress: req.remoteAddress,
    remotePort: req.remotePort,
    serverName: req.serverName,
    serverPort: req.serverPort,
    scheme: req.scheme,
    contentLength,
    scriptName: req.scriptName,
  });
}

/**
 * Bodies up to this size that arrive with their head go to the client whole: head and body in one
 * write instead of a write per DATA frame or socket read (larger ones would cost a copy for little).
 */
export const WHOLE_BODY_MAX = 256 * 1024;

/**
 * The Content-Length of a response that goes to the client as one buffer, or -1 when its body
 * streams: it must be framed by a Content-Length alone (a de-chunked body is re-framed), typed
 * (Fastify would type an untyped buffer, changing the response), and on the wire (not HEAD, 1xx,
 * 204 or 304, whose framing headers describe no body here). The transport that waits for such a
 * body and the exchange that sends it whole decide with this same rule.
 */
export function wholeBodyLength(method: string, status: number, headers: Record<string, string | string[]>): number {
  if (status < 200 || status === 204 || status === 304 || method === 'HEAD') return -1;
  const cl = headers['content-length'];
  if (typeof cl !== 'string' || headers['content-type'] === undefined || headers['transfer-encoding'] !== undefined) return -1;
  const length = Number(cl);
  return Number.isSafeInteger(length) && length >= 0 && length <= WHOLE_BODY_MAX ? length : -1;
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
