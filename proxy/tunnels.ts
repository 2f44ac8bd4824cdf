// Upgraded connections: HTTP/1.1 `Upgrade` (WebSocket or any other token)
// and HTTP/2 extended CONNECT (RFC 8441), tunnelled to the route's upstream as
// Caddy does by default (a route turns it off with `upgrade: false`). The
// proxy never parses what flows through (WebSocket frames, subprotocols,
// extensions, close codes are the two ends' business): it relays bytes with
// backpressure both ways and half-closes each direction on its own.
//
//   gatewire upstream: one native upgrade stream (PROTOCOL.md 4.3), multiplexed
//                      and flow controlled like any stream;
//   http upstream:     a connection of its own, the request head written as is,
//                      and after the upstream's 101 the raw bytes (NGINX's
//                      proxy_pass with the Upgrade headers);
//   uwsgi upstream:    refused with 502: the uwsgi protocol has no tunnel.
//
// A tunnel is not a request for the timeouts: the read/send timeouts cover
// only the handshake; afterwards `timeouts.tunnel_idle` (default 1 h) closes a
// tunnel with no byte in either direction. It keeps the upstream runtime it
// started on across reloads (the runtime counts it as an exchange), and a
// graceful stop closes what is still open once the graceful timeout is over.
import { randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse, ServerHttp2Stream } from 'node:http2';
import net from 'node:net';
import { type Duplex, PassThrough } from 'node:stream';
import type { Logger } from 'pino';
import { hostnameOf } from '../protocol/addresses.ts';
import { ErrorCode } from '../protocol/constants.ts';
import { HOP_BY_HOP } from '../protocol/hop-by-hop.ts';
import { HttpResponseParser } from '../protocol/http-response.ts';
import type { GatewireStream } from '../protocol/session.ts';
import { varsFromHttpRequest } from '../protocol/uwsgi.ts';
import type { Vars } from '../protocol/vars.ts';
import { forwardedHeaders } from './forwarding.ts';
import type { Host } from './hosts.ts';
import type { ProxyMetrics } from './metrics.ts';
import { climbsAboveRoot } from './request-target.ts';
import type { CompiledRoute, Generation } from './routes.ts';
import type { GatewireTransport } from './transports/gatewire.ts';
import type { UpstreamRuntime } from './upstream-runtime.ts';

export interface TunnelContext {
  log: Logger;
  metrics: ProxyMetrics | null;
  accessLog: boolean;
  scheme: 'http' | 'https';
  serverPort: number;
}

/** The bytes of the answer head an upstream may send before its 101 (the same limit as a response head). */
const MAX_HANDSHAKE_HEAD = 64 * 1024;

const kTunnel = Symbol('gatewire.tunnel');
type TunnelSide = Duplex & { [kTunnel]?: Tunnel };

/** Where the client side of a tunnel came from. */
type ClientKind = 'http1' | 'h2';

/** What the upstream answered the upgrade with. */
interface UpstreamAnswer {
  status: number;
  /** Lower-case names, repeats kept. */
  headers: string[];
  /** The tunnel (a native stream, or the upstream socket after its 101) or the non-101 body. */
  stream: Duplex;
  /** Bytes the upstream sent right after its 101 head (http upstreams). */
  rest: Buffer | null;
}

function isTokenList(value: string | undefined, token: string): boolean {
  if (value === undefined) return false;
  for (const t of value.split(',')) if (t.trim().toLowerCase() === token) return true;
  return false;
}

/** True when an HTTP/1.1 request asks to switch protocols and carries no body (a body rules the upgrade out). */
export function asksForUpgrade(req: http.IncomingMessage): boolean {
  const h = req.headers;
  if (h.upgrade === undefined || !isTokenList(h.connection, 'upgrade')) return false;
  const cl = h['content-length'];
  return h['transfer-encoding'] === undefined && (cl === undefined || cl === '0');
}

export class TunnelManager {
  private readonly ctx: TunnelContext;
  private readonly generation: () => Generation;
  private readonly open = new Set<Tunnel>();
  private sweeper: NodeJS.Timeout | null = null;
  private sweepEveryMs = 0;
  private closing = false;

  constructor(ctx: TunnelContext, generation: () => Generation) {
    this.ctx = ctx;
    this.generation = generation;
  }

  get openCount(): number {
    return this.open.size;
  }

  /**
   * Hooks the client listener: HTTP/1.1 'upgrade' events (with node:http's shouldUpgradeCallback
   * deciding per route, Node 24+) and, on the h2 listener, extended CONNECT ('connect').
   */
  attach(server: http.Server, h2: boolean): void {
    (server as http.Server & { shouldUpgradeCallback?: (req: http.IncomingMessage) => boolean }).shouldUpgradeCallback = (req) => this.wants(req);
    server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => this.onUpgrade(server, req, socket, head));
    if (h2) {
      server.on('connect', (req: Http2ServerRequest | http.IncomingMessage, resOrSocket: Http2ServerResponse | Duplex) => {
        if (req.httpVersionMajor === 2) this.onH2Connect(req as Http2ServerRequest, resOrSocket as Http2ServerResponse);
        else writeShort(resOrSocket as net.Socket, 405); // HTTP/1.1 CONNECT: no forward proxying here
      });
    }
  }

  /** node:http's shouldUpgradeCallback: an Upgrade request is tunnelled unless its route says `upgrade: false`. */
  wants(req: http.IncomingMessage): boolean {
    if (this.closing || !asksForUpgrade(req)) return false;
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const match = this.generation().match(hostnameOf(req.headers.host ?? ''), q < 0 ? url : url.slice(0, q));
    // No route, a redirect, or `upgrade: false`: the ordinary request path answers (404, 301, or the
    // request forwarded without its Upgrade header, as before tunnels existed).
    return match !== null && !match.redirect && match.route.upgrade;
  }

  /** The listener's 'upgrade' event (HTTP/1.1). */
  onUpgrade(server: http.Server, req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    const sock = socket as net.Socket;
    sock.on('error', noop);
    if (!this.wants(req)) {
      // Node without shouldUpgradeCallback (20) emits every Upgrade here: a route with
      // `upgrade: false` gets the request the ordinary way, on a connection that then closes.
      if (!this.closing) {
        const res = new http.ServerResponse(req);
        res.shouldKeepAlive = false;
        res.assignSocket(sock);
        res.once('finish', () => sock.destroySoon());
        server.emit('request', req, res);
        return;
      }
      writeShort(sock, this.closing ? 503 : 400);
      return;
    }
    void this.start(req, { kind: 'http1', socket: sock, head }, req.headers.upgrade as string);
  }

  /** The h2 listener's 'connect' event: extended CONNECT (RFC 8441) for `:protocol websocket`. */
  onH2Connect(req: Http2ServerRequest, res: Http2ServerResponse): void {
    const protocol = req.headers[':protocol'];
    if (typeof protocol !== 'string' || protocol.toLowerCase() !== 'websocket' || this.closing) {
      res.writeHead(this.closing ? 503 : 501, { 'content-type': 'text/plain; charset=utf-8' });
      res.end(this.closing ? '503 Service Unavailable\n' : '501 Not Implemented: only CONNECT with :protocol websocket is proxied\n');
      return;
    }
    void this.start(req as unknown as http.IncomingMessage, { kind: 'h2', socket: res.stream, head: null, res }, 'websocket');
  }

  private async start(req: http.IncomingMessage, client: ClientEnd, token: string): Promise<void> {
    const ctx = this.ctx;
    const url = (client.kind === 'h2' ? (req.headers[':path'] as string | undefined) : req.url) ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    if (url.charCodeAt(0) !== 47 || climbsAboveRoot(path)) return rejectClient(client, 400);
    const authority = (req.headers.host ?? req.headers[':authority']) as string | undefined;
    const hostname = hostnameOf(authority ?? '');
    const gen = this.generation();
    const match = gen.match(hostname, path);
    if (match === null) return rejectClient(client, 404);
    if (match.redirect) return rejectClient(client, 404);
    const route = match.route;
    // shouldUpgrade() admits only routes with upgrade, which a static-only route (no runtime) never has
    const runtime = route.runtime as UpstreamRuntime;
    const requestId = requestIdOf(req);
    const protocol = runtime.cfg.protocol;
    if (protocol === 'uwsgi') {
      ctx.log.error(
        { reqId: requestId, path: url, upstream: runtime.name },
        `upgrade (${token}) refused with 502: upstream '${runtime.name}' speaks uwsgi, which cannot carry a WebSocket or any upgraded connection; point this route at a gatewire upstream (gatewire serve) or an http one (the app's own HTTP server), as NGINX users use proxy_pass rather than uwsgi_pass for WebSockets`,
      );
      ctx.metrics?.upgradeFinished(route.label, runtime.name, 502);
      return rejectClient(client, 502);
    }
    const remoteAddress = (client.kind === 'h2' ? req.socket?.remoteAddress : (client.socket as net.Socket).remoteAddress) ?? '';
    const remotePort = (client.kind === 'h2' ? req.socket?.remotePort : (client.socket as net.Socket).remotePort) ?? 0;
    const fwd = forwardedHeaders(req, {
      clientIp: remoteAddress,
      scheme: ctx.scheme,
      requestId,
      trusted: gen.trusted(remoteAddress),
      prefix: route.strip ? route.prefix : '',
      dropContentLength: true,
    });
    if (client.kind === 'h2') {
      // The app sees the HTTP/1.1 handshake it knows (RFC 8441 §5 maps one onto the other).
      fwd.push('sec-websocket-key', randomBytes(16).toString('base64'));
    }
    fwd.push('upgrade', token, 'connection', 'upgrade');
    const upstreamPath = route.strip ? url.slice(route.prefix.length - (route.prefix.endsWith('/') ? 1 : 0)) || '/' : url;
    const tunnel = new Tunnel(this, route, requestId, url, client, remoteAddress);
    runtime.exchangeStarted();
    let answer: UpstreamAnswer;
    try {
      answer = await this.connectUpstream(runtime, tunnel, upstreamPath, fwd, remoteAddress, remotePort, hostname);
    } catch (err) {
      runtime.exchangeEnded();
      const status = (err as { statusCode?: number }).statusCode ?? 502;
      ctx.log.warn({ reqId: requestId, path: url, upstream: runtime.name, err: (err as Error).message }, `upgrade failed: ${status}`);
      ctx.metrics?.upgradeFinished(route.label, runtime.name, status);
      tunnel.host?.release();
      return rejectClient(client, status);
    }
    if (answer.status !== 101) {
      runtime.exchangeEnded();
      tunnel.host?.release();
      ctx.metrics?.upgradeFinished(route.label, runtime.name, answer.status);
      relayRefusal(client, answer, requestId);
      if (ctx.accessLog) ctx.log.info({ reqId: requestId, method: 'GET', path: url, status: answer.status, upstream: tunnel.host?.address ?? null, upgrade: token }, 'access');
      return;
    }
    if (client.socket.destroyed) {
      runtime.exchangeEnded();
      tunnel.host?.release();
      answer.stream.destroy();
      return;
    }
    ctx.metrics?.upgradeFinished(route.label, runtime.name, 101);
    acceptClient(client, answer.headers, token, requestId);
    this.open.add(tunnel);
    ctx.metrics?.tunnelOpened();
    this.ensureSweeper(runtime.cfg.timeouts.tunnel_idle_ms);
    tunnel.run(answer.stream, answer.rest);
  }

  /** Tries the pool's servers in policy order until one answers the handshake (connection failures only, as proxy_next_upstream error). */
  private async connectUpstream(runtime: UpstreamRuntime, tunnel: Tunnel, path: string, fwd: string[], remoteAddress: string, remotePort: number, serverName: string): Promise<UpstreamAnswer> {
    const pool = runtime.pool;
    const tried = new Set<Host>();
    const sel = { clientIp: remoteAddress, headers: headersObject(fwd), url: path };
    let lastErr: Error = Object.assign(new Error(`no available server in upstream ${runtime.name}`), { statusCode: 503 });
    for (let attempt = 0; attempt < Math.max(1, pool.hosts.length); attempt++) {
      const host = pool.select(sel, tried);
      if (host === null) break;
      tried.add(host);
      host.acquire();
      tunnel.host = host;
      try {
        const answer =
          runtime.cfg.protocol === 'gatewire'
            ? await gatewireHandshake(runtime, host, path, fwd, remoteAddress, remotePort, serverName, this.ctx)
            : await httpHandshake(runtime, host, path, fwd);
        host.markSuccess();
        return answer;
      } catch (err) {
        host.release();
        tunnel.host = null;
        lastErr = err as Error;
        if ((err as { retryable?: boolean }).retryable !== true) throw err;
        pool.hostFailed(host);
      }
    }
    throw lastErr;
  }

  /** @internal */
  _closed(t: Tunnel): void {
    if (!this.open.delete(t)) return;
    this.ctx.metrics?.tunnelClosed(t.bytesUp - t.reportedUp, t.bytesDown - t.reportedDown);
    if (this.ctx.accessLog) {
      this.ctx.log.info(
        {
          reqId: t.requestId,
          method: 'GET',
          path: t.url,
          status: 101,
          upstream: t.host?.address ?? null,
          tunnel: t.client.kind === 'h2' ? 'h2-websocket' : 'upgrade',
          bytes_in: t.bytesUp,
          bytes_out: t.bytesDown,
          ms: Math.round(performance.now() - t.startedAt),
          closed_by: t.closedBy,
        },
        'access',
      );
    }
    if (this.open.size === 0 && this.sweeper !== null) {
      clearInterval(this.sweeper);
      this.sweeper = null;
      this.sweepEveryMs = 0;
    }
  }

  private ensureSweeper(idleMs: number): void {
    // One timer for every tunnel: a tunnel marks itself active on each byte, the sweep closes
    // those that stayed inactive for their whole idle timeout (precision: a tenth of it, ≤ 30 s).
    const every = Math.max(50, Math.min(30_000, Math.floor(idleMs / 10)));
    if (this.sweeper !== null && this.sweepEveryMs <= every) return;
    if (this.sweeper !== null) clearInterval(this.sweeper);
    this.sweepEveryMs = every;
    this.sweeper = setInterval(sweepTunnels, every, this.open, this.ctx.metrics);
    this.sweeper.unref();
  }

  /** Graceful stop: no new tunnels; those open are closed after `graceMs` (each direction ended, then destroyed). */
  async close(graceMs: number): Promise<void> {
    this.closing = true;
    const deadline = Date.now() + graceMs;
    while (this.open.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    for (const t of [...this.open]) t.shutdown('graceful stop');
  }
}

function sweepTunnels(open: Set<Tunnel>, metrics: ProxyMetrics | null): void {
  const now = performance.now();
  for (const t of open) {
    // a long-lived tunnel's bytes show in the metrics as they flow, not only when it closes
    if (metrics !== null && (t.bytesUp !== t.reportedUp || t.bytesDown !== t.reportedDown)) {
      metrics.tunnelBytesRelayed(t.bytesUp - t.reportedUp, t.bytesDown - t.reportedDown);
      t.reportedUp = t.bytesUp;
      t.reportedDown = t.bytesDown;
    }
    if (t.active) {
      t.active = false;
      t.idleSince = now;
    } else if (now - t.idleSince >= t.idleMs) t.timeout();
  }
}

interface ClientEnd {
  kind: ClientKind;
  socket: Duplex;
  /** Bytes the client sent after its upgrade request (dropped once relayed: it may pin the whole read buffer). */
  head: Buffer | null;
  res?: Http2ServerResponse;
}

/** One tunnelled connection: client side ↔ upstream side, bytes counted, idle tracked. */
class Tunnel {
  readonly manager: TunnelManager;
  readonly route: CompiledRoute;
  readonly requestId: string;
  readonly url: string;
  readonly client: ClientEnd;
  readonly remoteAddress: string;
  readonly startedAt = performance.now();
  readonly idleMs: number;
  host: Host | null = null;
  upstream: Duplex | null = null;
  bytesUp = 0;
  bytesDown = 0;
  /** Bytes already added to the metrics. */
  reportedUp = 0;
  reportedDown = 0;
  active = true;
  idleSince = 0;
  closedBy = '';
  private clientEnded = false;
  private upstreamEnded = false;
  private done = false;

  constructor(manager: TunnelManager, route: CompiledRoute, requestId: string, url: string, client: ClientEnd, remoteAddress: string) {
    this.manager = manager;
    this.route = route;
    this.requestId = requestId;
    this.url = url;
    this.client = client;
    this.remoteAddress = remoteAddress;
    this.idleMs = (route.runtime as UpstreamRuntime).cfg.timeouts.tunnel_idle_ms;
  }

  run(upstream: Duplex, rest: Buffer | null): void {
    this.upstream = upstream;
    const client = this.client.socket as TunnelSide;
    const up = upstream as TunnelSide;
    client[kTunnel] = this;
    up[kTunnel] = this;
    if (this.client.kind === 'http1') (client as net.Socket).setTimeout(0);
    if (rest !== null && rest.length > 0) {
      this.bytesDown += rest.length;
      client.write(rest);
    }
    const head = this.client.head;
    this.client.head = null;
    if (head !== null && head.length > 0) {
      this.bytesUp += head.length;
      up.write(head);
    }
    client.on('data', onClientData);
    client.on('drain', onClientDrain);
    client.on('end', onClientEnd);
    client.on('close', onClientClose);
    if (this.client.kind === 'h2') client.on('error', noop); // an HTTP/1.1 socket has had one since onUpgrade
    up.on('data', onUpstreamData);
    up.on('drain', onUpstreamDrain);
    up.on('end', onUpstreamEnd);
    up.on('close', onUpstreamClose);
    up.on('error', noop);
    client.resume();
    up.resume();
  }

  clientData(chunk: Buffer): void {
    this.active = true;
    this.bytesUp += chunk.length;
    const up = this.upstream as Duplex & Partial<Pick<GatewireStream, 'tryWriteNow'>>;
    if (up.tryWriteNow?.(chunk)) return;
    if (!up.write(chunk)) this.client.socket.pause();
  }

  upstreamData(chunk: Buffer): void {
    this.active = true;
    this.bytesDown += chunk.length;
    if (!this.client.socket.write(chunk)) (this.upstream as Duplex).pause();
  }

  clientEnd(): void {
    this.clientEnded = true;
    this.closedBy ||= 'client';
    (this.upstream as Duplex).end();
    this.maybeDone();
  }

  upstreamEnd(): void {
    this.upstreamEnded = true;
    this.closedBy ||= 'upstream';
    this.client.socket.end();
    this.maybeDone();
  }

  private maybeDone(): void {
    if (this.clientEnded && this.upstreamEnded) this.finish();
  }

  /**
   * One side is closed for good. Unless both directions had ended cleanly, the other side is
   * aborted (a client RST becomes RESET(CANCEL) upstream, an upstream RESET an RST to the client):
   * a truncated stream must never look like a clean end.
   */
  sideClosed(which: 'client' | 'upstream'): void {
    if (this.done) return;
    this.closedBy ||= which;
    if (!(this.clientEnded && this.upstreamEnded)) abortSide(which === 'client' ? (this.upstream as Duplex) : this.client.socket);
    this.finish();
  }

  timeout(): void {
    this.closedBy = `idle ${this.idleMs} ms`;
    this.shutdown(this.closedBy);
  }

  shutdown(why: string): void {
    this.closedBy ||= why;
    const up = this.upstream as Duplex;
    const s = up as Partial<GatewireStream>;
    if (typeof s.reset === 'function' && s.session !== undefined) s.reset(ErrorCode.TIMEOUT);
    else up.destroy();
    this.client.socket.destroy();
    this.finish();
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    this.host?.release();
    (this.route.runtime as UpstreamRuntime).exchangeEnded();
    this.manager._closed(this);
  }
}

function abortSide(side: Duplex): void {
  if (side.destroyed) return;
  const s = side as Partial<GatewireStream>;
  if (typeof s.reset === 'function' && s.session !== undefined) s.reset(ErrorCode.CANCEL);
  else if (typeof (side as net.Socket).resetAndDestroy === 'function' && (side as net.Socket).readyState !== 'closed') (side as net.Socket).resetAndDestroy();
  else side.destroy();
}

function onClientData(this: TunnelSide, chunk: Buffer): void {
  this[kTunnel]?.clientData(chunk);
}
function onUpstreamData(this: TunnelSide, chunk: Buffer): void {
  this[kTunnel]?.upstreamData(chunk);
}
function onClientDrain(this: TunnelSide): void {
  this[kTunnel]?.upstream?.resume();
}
function onUpstreamDrain(this: TunnelSide): void {
  this[kTunnel]?.client.socket.resume();
}
function onClientEnd(this: TunnelSide): void {
  this[kTunnel]?.clientEnd();
}
function onUpstreamEnd(this: TunnelSide): void {
  this[kTunnel]?.upstreamEnd();
}
function onClientClose(this: TunnelSide): void {
  this[kTunnel]?.sideClosed('client');
}
function onUpstreamClose(this: TunnelSide): void {
  this[kTunnel]?.sideClosed('upstream');
}

function noop(): void {}

function requestIdOf(req: http.IncomingMessage): string {
  const id = req.headers['x-request-id'];
  return typeof id === 'string' && id.length > 0 && id.length <= 200 ? id : randomUUID();
}

function headersObject(list: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < list.length; i += 2) out[list[i]] ??= list[i + 1];
  return out;
}

function writeShort(socket: net.Socket, status: number): void {
  if (socket.destroyed) return;
  const text = http.STATUS_CODES[status] ?? '';
  const body = `${status} ${text}\n`;
  socket.end(`HTTP/1.1 ${status} ${text}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`);
}

function rejectClient(client: ClientEnd, status: number): void {
  if (client.kind === 'h2') {
    const res = client.res as Http2ServerResponse;
    if (res.headersSent || res.stream.destroyed) return;
    res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
    res.end(`${status} ${http.STATUS_CODES[status] ?? ''}\n`);
    return;
  }
  writeShort(client.socket as net.Socket, status);
}

/** The client's 101 (HTTP/1.1) or 200 (HTTP/2 extended CONNECT), with the upstream's headers that belong to it. */
function acceptClient(client: ClientEnd, upstreamHeaders: string[], token: string, requestId: string): void {
  let hasRequestId = false;
  if (client.kind === 'h2') {
    const out: Record<string, string | string[]> = {};
    for (let i = 0; i < upstreamHeaders.length; i += 2) {
      const name = upstreamHeaders[i];
      // The HTTP/1.1 handshake proof means nothing to an HTTP/2 client (RFC 8441 §5).
      if (HOP_BY_HOP.has(name) || name === 'sec-websocket-accept' || name.startsWith(':')) continue;
      if (name === 'x-request-id') hasRequestId = true;
      const prev = out[name];
      out[name] = prev === undefined ? upstreamHeaders[i + 1] : Array.isArray(prev) ? [...prev, upstreamHeaders[i + 1]] : [prev, upstreamHeaders[i + 1]];
    }
    if (!hasRequestId) out['x-request-id'] = requestId;
    (client.socket as ServerHttp2Stream).respond({ ...out, ':status': 200 });
    return;
  }
  let head = `HTTP/1.1 101 Switching Protocols\r\nupgrade: ${token}\r\nconnection: upgrade\r\n`;
  for (let i = 0; i < upstreamHeaders.length; i += 2) {
    const name = upstreamHeaders[i];
    if (HOP_BY_HOP.has(name)) continue;
    if (name === 'x-request-id') hasRequestId = true;
    head += `${name}: ${upstreamHeaders[i + 1]}\r\n`;
  }
  if (!hasRequestId) head += `x-request-id: ${requestId}\r\n`;
  client.socket.write(`${head}\r\n`);
}

/** The upstream declined (not 101): its answer goes to the client as a plain response, then the connection closes. */
function relayRefusal(client: ClientEnd, answer: UpstreamAnswer, requestId: string): void {
  const body = answer.stream;
  if (client.kind === 'h2') {
    const res = client.res as Http2ServerResponse;
    const out: Record<string, string | string[]> = { 'x-request-id': requestId };
    for (let i = 0; i < answer.headers.length; i += 2) if (!HOP_BY_HOP.has(answer.headers[i])) out[answer.headers[i]] = answer.headers[i + 1];
    res.writeHead(answer.status, out);
    body.pipe(res);
    return;
  }
  const socket = client.socket as net.Socket;
  let head = `HTTP/1.1 ${answer.status} ${http.STATUS_CODES[answer.status] ?? ''}\r\n`;
  let requestIdSeen = false;
  for (let i = 0; i < answer.headers.length; i += 2) {
    const name = answer.headers[i];
    if (HOP_BY_HOP.has(name)) continue;
    if (name === 'x-request-id') requestIdSeen = true;
    head += `${name}: ${answer.headers[i + 1]}\r\n`;
  }
  if (!requestIdSeen) head += `x-request-id: ${requestId}\r\n`;
  socket.write(`${head}connection: close\r\n\r\n`);
  if (answer.rest !== null && answer.rest.length > 0) socket.write(answer.rest);
  body.on('error', () => socket.destroy());
  body.pipe(socket);
  body.resume();
}

// ---------------------------------------------------------------- upstream handshakes

function handshakeTimeout(what: string, ms: number): Error {
  return Object.assign(new Error(`${what}: no answer to the upgrade within ${ms} ms`), { statusCode: 504 });
}

/** gatewire: an upgrade stream on one of the host's sessions; resolves with its RESPONSE. */
async function gatewireHandshake(
  runtime: UpstreamRuntime,
  host: Host,
  path: string,
  fwd: string[],
  remoteAddress: string,
  remotePort: number,
  serverName: string,
  ctx: TunnelContext,
): Promise<UpstreamAnswer> {
  const vars: Vars = varsFromHttpRequest({
    method: 'GET',
    url: path,
    httpVersion: '1.1',
    rawHeaders: fwd,
    remoteAddress,
    remotePort,
    serverName,
    serverPort: ctx.serverPort,
    scheme: ctx.scheme,
    scriptName: '',
  });
  const transport = runtime.transport as GatewireTransport;
  const stream = await transport.openUpgradeStream(host, vars);
  const readMs = runtime.cfg.timeouts.read_ms;
  return new Promise<UpstreamAnswer>((resolve, reject) => {
    const timer = setTimeout(() => {
      stream.reset(ErrorCode.TIMEOUT);
      reject(handshakeTimeout(`upstream ${host.address}`, readMs));
    }, readMs);
    stream.once('response', (status: number, headers: Vars) => {
      clearTimeout(timer);
      stream.removeListener('error', onError);
      stream.pause();
      stream.dropHeads();
      if (status !== 101) stream.end(); // declined: the request had no body (PROTOCOL.md 4.3)
      resolve({ status, headers: lowerCased(headers), stream, rest: null });
    });
    const onError = (err: Error & { retryable?: boolean }) => {
      clearTimeout(timer);
      reject(Object.assign(new Error(`upstream ${host.address}: ${err.message}`), { statusCode: 502, retryable: err.retryable === true }));
    };
    stream.once('error', onError);
  });
}

function lowerCased(headers: Vars): string[] {
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) out.push(headers[i].toLowerCase(), headers[i + 1]);
  return out;
}

/** http: a connection of the tunnel's own, the request head, the upstream's answer head. */
function httpHandshake(runtime: UpstreamRuntime, host: Host, path: string, fwd: string[]): Promise<UpstreamAnswer> {
  const target = host.target;
  const cfg = runtime.cfg;
  return new Promise<UpstreamAnswer>((resolve, reject) => {
    // Half-open allowed: each direction of the tunnel ends on its own.
    const socket = target.kind === 'unix' ? net.connect({ path: target.path, allowHalfOpen: true }) : net.connect({ port: target.port, host: target.host, allowHalfOpen: true });
    let settled = false;
    let connected = false;
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    let timer = setTimeout(() => fail(Object.assign(new Error(`upstream ${host.address}: connect timeout`), { statusCode: 502, retryable: true })), cfg.timeouts.connect_ms);
    socket.once('error', (err) => fail(Object.assign(new Error(`upstream ${host.address}: ${err.message}`), { statusCode: 502, retryable: !connected })));
    socket.once('close', () => fail(Object.assign(new Error(`upstream ${host.address} closed the connection before answering the upgrade`), { statusCode: 502 })));
    socket.once('connect', () => {
      connected = true;
      socket.setNoDelay(true);
      clearTimeout(timer);
      timer = setTimeout(() => fail(handshakeTimeout(`upstream ${host.address}`, cfg.timeouts.read_ms)), cfg.timeouts.read_ms);
      let head = `GET ${path} HTTP/1.1\r\n`;
      for (let i = 0; i < fwd.length; i += 2) head += `${fwd[i]}: ${fwd[i + 1]}\r\n`;
      socket.write(`${head}\r\n`);
    });
    let status = 0;
    let headers: string[] = [];
    const early: Buffer[] = [];
    /** Where a refusal's body goes once the head is known (until then it is kept in `early`). */
    let body: PassThrough | null = null;
    const parser = new HttpResponseParser(
      {
        onHead(s, _reason, raw) {
          status = s;
          headers = [];
          for (let i = 0; i < raw.length; i += 2) {
            const name = raw[i].toLowerCase();
            // a refusal's body reaches the client de-chunked and close-delimited
            if (s !== 101 && (name === 'content-length' || name === 'transfer-encoding')) continue;
            headers.push(name, raw[i + 1]);
          }
        },
        onBody(chunk) {
          if (body !== null) body.write(Buffer.from(chunk));
          else early.push(Buffer.from(chunk));
        },
        onEnd() {
          body?.end();
          if (status !== 101) socket.destroy();
        },
      },
      { upgrade: true, maxHeaderSize: MAX_HANDSHAKE_HEAD },
    );
    const onData = (chunk: Buffer) => {
      const err = parser.push(chunk);
      if (err) {
        if (settled) socket.destroy();
        else fail(Object.assign(new Error(`upstream ${host.address}: invalid answer to the upgrade: ${err.message}`), { statusCode: 502 }));
        return;
      }
      if (status === 0 || settled) return;
      settled = true;
      clearTimeout(timer);
      socket.removeAllListeners('close');
      socket.removeAllListeners('error');
      socket.on('error', noop);
      if (status === 101) {
        socket.removeListener('data', onData);
        socket.pause();
        resolve({ status, headers, stream: socket, rest: early.length > 0 ? Buffer.concat(early) : null });
        return;
      }
      const refusal = new PassThrough();
      for (const c of early) refusal.write(c);
      if (parser.done) refusal.end();
      else {
        body = refusal;
        socket.once('close', () => {
          parser.finish();
          refusal.end();
        });
      }
      resolve({ status, headers, stream: refusal, rest: null });
    };
    socket.on('data', onData);
  });
}
