// The edge: a Fastify instance whose one catch-all route matches the config's
// routes (host, then longest path prefix, like NGINX's server + location) and
// forwards through @fastify/reply-from, registered once with our Dispatcher as
// its `undici`. Everything specific to a request travels in a ProxyRequest
// attached to the outgoing headers under a symbol (see dispatcher.ts).
//
// Config generations: SIGHUP builds a new Generation (routes + upstream
// runtimes) and swaps it in for new requests; a request keeps the runtime it
// started with, and runtimes the new config no longer uses are closed once
// their last exchange ended. An upstream whose config did not change keeps its
// runtime (pool state, health and warm connections) across the reload.
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import net, { BlockList } from 'node:net';
import { Transform, type TransformCallback, type Readable } from 'node:stream';
import replyFrom from '@fastify/reply-from';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import pino, { type Logger } from 'pino';
import type { ProxyConfig, UpstreamConfig } from './config.ts';
import { climbsAboveRoot } from './request-target.ts';
import { Dispatcher, kProxyRequest, ProxyRequest, type UpstreamRuntime } from './dispatcher.ts';
import { BodyTooLargeError, STATUS_TEXT, type UpstreamError } from './errors.ts';
import { HealthChecker } from './healthchecks.ts';
import type { Host } from './hosts.ts';
import type { ProxyMetrics } from './metrics.ts';
import { GatewireTransport } from './transports/gatewire.ts';
import { HttpTransport } from './transports/http.ts';
import type { Transport, TransportRequest } from './transports/transport.ts';
import { UwsgiTransport } from './transports/uwsgi.ts';
import { type NameResolver, UpstreamPool } from './upstreams.ts';

export interface ProxyServerOptions {
  logger?: Logger;
  metrics?: ProxyMetrics | null;
  /** DNS replacement for `resolve: true` servers (tests). */
  resolver?: NameResolver;
}

export function createTransport(cfg: UpstreamConfig): Transport {
  switch (cfg.protocol) {
    case 'gatewire':
      return new GatewireTransport(cfg);
    case 'uwsgi':
      return new UwsgiTransport(cfg);
    case 'http':
      return new HttpTransport(cfg);
  }
}

/** One upstream: pool + transport + health checks. Shared by generations while its config is unchanged. */
class Runtime implements UpstreamRuntime {
  readonly name: string;
  readonly pool: UpstreamPool;
  readonly transport: Transport;
  readonly health: HealthChecker | null;
  inflight = 0;
  private drainTimer: NodeJS.Timeout | null = null;

  readonly cfg: UpstreamConfig;
  readonly key: string;
  constructor(
    cfg: UpstreamConfig,
    key: string,
    opts: ProxyServerOptions,
    log: Logger,
  ) {
    this.cfg = cfg;
    this.key = key;
    this.name = cfg.name;
    this.pool = new UpstreamPool(cfg, { resolver: opts.resolver, logger: log });
    this.transport = createTransport(cfg);
    this.health = cfg.health_check
      ? new HealthChecker(this.pool, (host, path, timeoutMs) => probe(this.transport, host, path, timeoutMs), {
          logger: log,
          metrics: opts.metrics ?? undefined,
        })
      : null;
    // Hosts removed by DNS: their kept connections go once they are drained.
    this.pool.on('drained', (host: Host) => this.transport.closeHost(host));
  }

  start(): void {
    void this.pool.start();
    this.health?.start();
  }

  /** Close once no exchange of this runtime is in flight (reload); `force` closes at once. */
  retire(force = false): Promise<void> {
    this.health?.stop();
    this.pool.stop();
    if (force || this.inflight === 0) return this.transport.close(force);
    return new Promise((resolve) => {
      this.drainTimer = setInterval(() => {
        if (this.inflight > 0) return;
        if (this.drainTimer) clearInterval(this.drainTimer);
        this.transport.close().then(resolve, resolve);
      }, 100);
      this.drainTimer.unref();
    });
  }
}

/** Health probe through the same transport as traffic. */
export async function probe(transport: Transport, host: Host, path: string, timeoutMs: number): Promise<number> {
  const req: TransportRequest = {
    method: 'GET',
    path,
    headers: { host: 'localhost', 'user-agent': 'gatewire-health-check' },
    body: null,
    remoteAddress: '127.0.0.1',
    remotePort: 0,
    scheme: 'http',
    serverName: 'localhost',
    serverPort: 0,
    readTimeoutMs: timeoutMs,
    bodyStarted: false,
    aborted: false,
    cancel: null,
  };
  const timer = setTimeout(() => {
    req.aborted = true;
    req.cancel?.();
  }, timeoutMs);
  try {
    const res = await transport.request(host, req);
    res.body.resume();
    await new Promise<void>((resolve, reject) => {
      res.body.once('end', resolve);
      res.body.once('error', reject);
      res.body.once('close', resolve);
    });
    return res.statusCode;
  } finally {
    clearTimeout(timer);
  }
}

interface CompiledRoute {
  /** Lowercase exact host, ".example.com" for "*.example.com", or null for any. */
  host: string | null;
  wildcard: boolean;
  prefix: string;
  strip: boolean;
  runtime: Runtime;
  label: string;
}

class Generation {
  readonly routes: CompiledRoute[];
  readonly runtimes: Map<string, Runtime>;
  readonly trust: (ip: string) => boolean;
  readonly scheme: 'http' | 'https';

  readonly config: ProxyConfig;
  constructor(
    config: ProxyConfig,
    previous: Generation | null,
    opts: ProxyServerOptions,
    log: Logger,
  ) {
    this.config = config;
    this.runtimes = new Map();
    for (const [name, cfg] of Object.entries(config.upstreams)) {
      const key = JSON.stringify(cfg);
      const old = previous?.runtimes.get(name);
      this.runtimes.set(name, old && old.key === key ? old : new Runtime(cfg, key, opts, log));
    }
    this.routes = config.routes.map((r) => {
      const h = r.match.host?.toLowerCase() ?? null;
      const wildcard = h?.startsWith('*.') ?? false;
      return {
        host: wildcard ? (h as string).slice(1) : h,
        wildcard,
        prefix: r.match.path_prefix,
        strip: r.strip_prefix,
        runtime: this.runtimes.get(r.upstream) as Runtime,
        label: `${r.match.host ?? ''}${r.match.path_prefix}`,
      };
    });
    // NGINX order: exact host, wildcard host, any host; within one, the longest prefix.
    const rank = (r: CompiledRoute) => (r.host === null ? 2 : r.wildcard ? 1 : 0);
    this.routes.sort((a, b) => rank(a) - rank(b) || b.prefix.length - a.prefix.length);
    this.trust = compileTrust(config.trust_proxy);
    this.scheme = config.listen.tls ? 'https' : 'http';
  }

  match(hostname: string, path: string): CompiledRoute | null {
    const routes = this.routes;
    for (let i = 0; i < routes.length; i++) {
      const r = routes[i];
      if (r.host !== null) {
        if (r.wildcard ? !hostname.endsWith(r.host) : hostname !== r.host) continue;
      }
      const p = r.prefix;
      if (!path.startsWith(p)) continue;
      if (path.length === p.length || p.charCodeAt(p.length - 1) === 47 || path.charCodeAt(p.length) === 47) return r;
    }
    return null;
  }
}

function compileTrust(trust: boolean | string[]): (ip: string) => boolean {
  if (trust === true) return () => true;
  if (trust === false || trust.length === 0) return () => false;
  const list = new BlockList();
  for (const cidr of trust) {
    const [addr, bits] = cidr.split('/');
    const family = net.isIPv6(addr) ? 'ipv6' : 'ipv4';
    if (bits === undefined) list.addAddress(addr, family);
    else list.addSubnet(addr, Number(bits), family);
  }
  return (ip) => {
    if (ip.startsWith('::ffff:') && net.isIPv4(ip.slice(7))) return list.check(ip.slice(7), 'ipv4');
    return list.check(ip, net.isIPv6(ip) ? 'ipv6' : 'ipv4');
  };
}

// Hop-by-hop headers (RFC 9110 §7.6.1) never cross the proxy in either direction;
// reply-from already drops Connection and the names it lists.
const HOP_BY_HOP = ['keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'connection'];

const kProxy = Symbol('gatewire.proxyServer');

declare module 'fastify' {
  interface FastifyRequest {
    gw: ProxyRequest | null;
  }
}

/** Counts a chunked body as it streams and fails it past max_body (NGINX's client_max_body_size). */
class BodyLimit extends Transform {
  private seen = 0;
  private readonly max: number;
  constructor(max: number) {
    super();
    this.max = max;
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.max) cb(new BodyTooLargeError(this.max));
    else cb(null, chunk);
  }
}

export class ProxyServer {
  readonly app: FastifyInstance;
  readonly log: Logger;
  private gen: Generation;
  private readonly dispatcher = new Dispatcher();
  private readonly metrics: ProxyMetrics | null;
  private readonly opts: ProxyServerOptions;
  private generation = 1;
  private reloads = 0;
  private openConnections = 0;
  private gaugeTimer: NodeJS.Timeout | null = null;
  private readonly accessLog: boolean;
  private closing = false;

  constructor(config: ProxyConfig, opts: ProxyServerOptions = {}) {
    this.opts = opts;
    this.log = opts.logger ?? pino({ level: config.log.level, base: { name: 'gatewire-proxy' } });
    this.metrics = opts.metrics ?? null;
    this.accessLog = config.log.access;
    this.gen = new Generation(config, null, opts, this.log);
    this.app = this.buildApp(config);
  }

  get config(): ProxyConfig {
    return this.gen.config;
  }

  private buildApp(config: ProxyConfig): FastifyInstance {
    const limits = config.limits;
    const serverOpts = {
      maxHeaderSize: limits.max_header_size,
      headersTimeout: limits.header_timeout_ms,
      requestTimeout: 0,
      keepAliveTimeout: limits.keepalive_timeout_ms,
      // Node enforces headersTimeout only when this sweep runs (default every 30 s): a
      // header_timeout below that would not be honoured (slowloris held for 30 s).
      connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(limits.header_timeout_ms / 4))),
    };
    const tls = config.listen.tls ? { cert: readFileSync(config.listen.tls.cert), key: readFileSync(config.listen.tls.key) } : null;
    const app = (Fastify as unknown as (o: object) => FastifyInstance)({
      loggerInstance: this.log,
      logController: new (Fastify as unknown as { LogController: new (o: object) => unknown }).LogController({ disableRequestLogging: true }),
      genReqId: (req: IncomingMessage) => {
        const id = req.headers['x-request-id'];
        return typeof id === 'string' && id.length > 0 && id.length <= 200 ? id : randomUUID();
      },
      // a request on a connection already accepted is served during a graceful stop, as NGINX does;
      // handle() answers it with `connection: close` and finish() ends the connection after it
      return503OnClosing: false,
      clientErrorHandler: onClientError,
      http2: config.listen.http2 as false,
      serverFactory: (handler: http.RequestListener) => {
        let server: http.Server;
        if (config.listen.http2) {
          server = (
            tls ? http2.createSecureServer({ ...tls, allowHTTP1: true, settings: { maxHeaderListSize: limits.max_header_size } }, handler as never) : http2.createServer(handler as never)
          ) as unknown as http.Server;
        } else if (tls) server = https.createServer({ ...serverOpts, ...tls }, handler);
        else server = http.createServer(serverOpts, handler);
        server.keepAliveTimeout = limits.keepalive_timeout_ms;
        server.headersTimeout = limits.header_timeout_ms;
        // Node keeps only the first 2000 raw header entries and drops the rest without a word;
        // max_header_size already bounds the head in bytes (431 past it), so no count limit.
        server.maxHeadersCount = 0;
        if (limits.max_connections > 0) server.maxConnections = limits.max_connections;
        server.on('connection', (sock: net.Socket) => {
          this.openConnections++;
          this.metrics?.connections.inc();
          sock.once('close', () => {
            this.openConnections--;
            this.metrics?.connections.dec();
          });
        });
        return server;
      },
    });

    // Bodies stream through untouched: no parser buffers them.
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('*', (_req, payload, done) => done(null, payload));
    app.decorateRequest('gw', null);

    app.register(replyFrom, {
      undici: this.dispatcher as never,
      base: 'http://upstream.gatewire',
      disableRequestLogging: true,
      // our dispatcher retries (on another host); reply-from's own retry would re-send to the same one
      retryMethods: [],
      cacheURLs: 1000,
    });

    app.setErrorHandler((err: Error & { statusCode?: number }, request, reply) => {
      // the upstream's body broke before the client head went out: an upstream fault like any other
      // (NGINX: "upstream sent invalid chunked response" → 502), whatever the stream's own error says
      // (the only error that reaches this handler once the upstream response was handed over is its
      // body stream's; a mapped status such as 504 for a silent body keeps its meaning)
      const code = err.statusCode;
      const status =
        code !== undefined && MAPPED.has(code)
          ? code
          : request.gw?.responded === true
            ? 502
            : code !== undefined && code >= 400 && code < 500
              ? code
              : 500;
      if (status >= 500) request.log.error({ err }, 'request failed');
      sendShort(reply, status);
    });
    app.setNotFoundHandler((_request, reply) => sendShort(reply, 404));

    const replyOpts = {
      rewriteRequestHeaders: (request: FastifyRequest, headers: Record<string | symbol, unknown>) => this.rewriteRequestHeaders(request, headers),
      rewriteHeaders: rewriteResponseHeaders,
      onError: onUpstreamError,
      onResponse: onUpstreamResponse,
      // the query travels in ctx.path, untouched
      queryString: noQueryString,
    };
    const handler = (request: FastifyRequest, reply: FastifyReply) => this.handle(request, reply, replyOpts);
    app.all('/', handler);
    app.all('/*', handler);

    app.addHook('onClose', async () => {
      if (this.gaugeTimer) clearInterval(this.gaugeTimer);
      await Promise.all([...this.gen.runtimes.values()].map((r) => r.retire(true)));
    });
    return app;
  }

  private handle(request: FastifyRequest, reply: FastifyReply, replyOpts: object): FastifyReply {
    const raw = request.raw;
    const url = raw.url as string;
    if (url.charCodeAt(0) !== 47) return sendShort(reply, 400);
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    // The target goes upstream exactly as sent (never normalised) and routing sees that same raw
    // path, so a route and the app behind it always agree on what was asked. Only a path that
    // climbs above the root is refused, as NGINX does: no client means it, and it aims at apps
    // that join the path to a directory.
    if (climbsAboveRoot(path)) return sendShort(reply, 400);
    const hostHeader = raw.headers.host ?? (raw.headers[':authority'] as string | undefined) ?? '';
    const hostname = hostnameOf(hostHeader);
    const gen = this.gen;
    const route = gen.match(hostname, path);
    if (this.closing) reply.header('connection', 'close');
    if (route === null) return sendShort(reply, 404);
    const runtime = route.runtime;
    const maxBody = runtime.cfg.max_body;
    const cl = raw.headers['content-length'];
    if (cl !== undefined && Number(cl) > maxBody) {
      reply.header('connection', 'close');
      return sendShort(reply, 413);
    }
    const socket = raw.socket;
    const ctx = new ProxyRequest(
      runtime,
      reply.raw,
      socket.remoteAddress ?? '',
      socket.remotePort ?? 0,
      gen.scheme,
      hostname,
      gen.config.listen.port,
      url,
      raw.headers,
      this.metrics,
    );
    request.gw = ctx;
    ctx.routeLabel = route.label;
    ctx.requestId = request.id;
    ctx.startedAt = performance.now();
    ctx.clientSocket = socket;
    ctx.bytesOutMark = socket.bytesWritten;
    ctx.bytesInMark = socket.bytesRead;
    const res = reply.raw as ServerResponse & Record<symbol, unknown>;
    res[kProxyRequest] = ctx;
    res[kProxy] = this;
    res.once('close', onClientResponseClose);
    if (request.body !== undefined && cl === undefined && request.body !== null) {
      // chunked upload: enforce max_body while it streams
      request.body = (request.body as Readable).pipe(new BodyLimit(maxBody));
    }
    if (route.strip) {
      // on the raw target: the query string stays as sent
      const rest = url.slice(route.prefix.length);
      ctx.path = rest.charCodeAt(0) === 47 ? rest : `/${rest}`;
    } else ctx.path = url;
    // reply-from would rebuild the target through the WHATWG URL parser (dot segments resolved,
    // `\` turned into `/`, escapes refused): it gets a fixed source and the transports read ctx.path.
    if (cl !== undefined && request.body != null) {
      const length = Number(cl);
      if (length > 0 && length <= runtime.cfg.body_buffer_size && raw.method !== 'GET' && raw.method !== 'HEAD') {
        readWholeBody(raw, length, ctx, reply, replyOpts);
        return reply;
      }
    }
    return reply.from('/', replyOpts);
  }

  private rewriteRequestHeaders(request: FastifyRequest, headers: Record<string | symbol, unknown>): Record<string | symbol, unknown> {
    const ctx = request.gw as ProxyRequest;
    const incoming = request.raw.headers;
    if (ctx.upstream.cfg.protocol !== 'http' && request.raw.httpVersionMajor === 1) return this.forwardFromRawHeaders(request, ctx, incoming);
    for (let i = 0; i < HOP_BY_HOP.length; i++) if (headers[HOP_BY_HOP[i]] !== undefined) headers[HOP_BY_HOP[i]] = undefined;
    // reply-from points Host at its base; the app must see the client's
    const host = incoming.host ?? (incoming[':authority'] as string | undefined);
    headers.host = host;
    const ip = ctx.clientIp;
    const trusted = this.gen.trust(ip);
    const xff = incoming['x-forwarded-for'];
    headers['x-forwarded-for'] = trusted && xff ? `${Array.isArray(xff) ? xff.join(', ') : xff}, ${ip}` : ip;
    if (!(trusted && incoming['x-forwarded-proto'])) headers['x-forwarded-proto'] = ctx.scheme;
    if (!(trusted && incoming['x-forwarded-host'])) headers['x-forwarded-host'] = host;
    headers['x-request-id'] = request.id;
    const method = request.raw.method;
    if ((method === 'GET' || method === 'HEAD') && request.body !== undefined) {
      // reply-from forwards no body for GET/HEAD; do not announce one
      headers['content-length'] = undefined;
    }
    headers[kProxyRequest] = ctx;
    return headers;
  }

  /**
   * gatewire and uwsgi upstreams get vars, not a header object: the vars are built straight from
   * the client's rawHeaders plus the forwarding headers (transport.ts forwardedRawHeaders), and
   * reply-from gets back only a one-key object carrying the context (it copies what it is given
   * once more before calling the dispatcher; a one-key copy is cheap). Same headers upstream as
   * the object path below, which the http transport (and HTTP/2 clients, whose raw list holds
   * pseudo-headers) still take.
   */
  private forwardFromRawHeaders(request: FastifyRequest, ctx: ProxyRequest, incoming: IncomingMessage['headers']): Record<string | symbol, unknown> {
    const ip = ctx.clientIp;
    const trusted = this.gen.trust(ip);
    const xff = incoming['x-forwarded-for'];
    const forwarded = ['x-forwarded-for', trusted && xff ? `${xff}, ${ip}` : ip, 'x-request-id', request.id];
    if (!(trusted && incoming['x-forwarded-proto'])) forwarded.push('x-forwarded-proto', ctx.scheme);
    const host = incoming.host;
    if (!(trusted && incoming['x-forwarded-host']) && host !== undefined) forwarded.push('x-forwarded-host', host);
    ctx.rawHeaders = request.raw.rawHeaders;
    ctx.forwarded = forwarded;
    const method = request.raw.method;
    // reply-from forwards no body for GET/HEAD; do not announce one
    ctx.dropContentLength = (method === 'GET' || method === 'HEAD') && request.body !== undefined;
    return { [kProxyRequest]: ctx };
  }

  /** A client response closed (finished or aborted): cancel upstream at once if unfinished, release, log, count. */
  finish(res: ServerResponse, ctx: ProxyRequest): void {
    let status = res.statusCode;
    if (!res.writableFinished) {
      status = 499;
      ctx.aborted = true;
      const cancel = ctx.cancel;
      ctx.cancel = null;
      cancel?.();
    }
    ctx.finish();
    // stopping: a keep-alive connection whose exchange ended is not kept (server.close waits for it)
    if (this.closing) ctx.clientSocket?.destroySoon();
    const ms = performance.now() - ctx.startedAt;
    // bytes sent/received on the client connection for this exchange, head included (NGINX's $bytes_sent)
    const socket = ctx.clientSocket;
    const bytes = socket ? socket.bytesWritten - ctx.bytesOutMark : 0;
    const m = this.metrics;
    if (m !== null) {
      m.requestFinished(ctx.routeLabel, ctx.upstream.name, status, ms / 1000, socket ? socket.bytesRead - ctx.bytesInMark : 0, bytes);
    }
    if (this.accessLog) {
      this.log.info(
        {
          // a head Fastify wrote in one writeHead() (a whole body, an error) leaves getHeader() empty
          reqId: res.getHeader('x-request-id') ?? ctx.requestId,
          method: ctx.method,
          path: ctx.url,
          status,
          bytes,
          upstream: ctx.hostAddress,
          upstream_ms: ctx.upstreamMs < 0 ? null : Math.round(ctx.upstreamMs * 100) / 100,
          ms: Math.round(ms * 100) / 100,
          ...(ctx.errorCode ? { error: ctx.errorCode } : {}),
        },
        'access',
      );
    }
  }

  /** On the config's address, or on a bound socket handle inherited from a supervisor (proxy/worker.ts). */
  async listen(handle?: object): Promise<string> {
    const { host, port } = this.gen.config.listen;
    for (const r of this.gen.runtimes.values()) r.start();
    // with a handle, host only keeps Fastify from also binding ::1 for "localhost"
    const address = await this.app.listen(handle ? ({ handle, host: '127.0.0.1' } as object) : { host, port });
    this.gaugeTimer = setInterval(() => this.updateGauges(), 1000);
    this.gaugeTimer.unref();
    return address;
  }

  private updateGauges(): void {
    const m = this.metrics;
    if (m === null) return;
    for (const r of this.gen.runtimes.values()) {
      for (const h of r.pool.hosts) m.upstreamStreams.set({ upstream: r.name, host: h.address }, h.inflight);
    }
  }

  /** Swap in a new config for new requests; in-flight ones finish on the runtimes they started with. */
  reload(config: ProxyConfig): { changed: string[] } {
    const old = this.gen;
    const next = new Generation(config, old, this.opts, this.log);
    const changed: string[] = [];
    for (const r of next.runtimes.values()) {
      if (old.runtimes.get(r.name) !== r) {
        r.start();
        changed.push(r.name);
      }
    }
    this.gen = next;
    this.generation++;
    this.reloads++;
    const kept = new Set(next.runtimes.values());
    for (const r of old.runtimes.values()) {
      if (!kept.has(r)) void r.retire();
    }
    const lc = old.config.listen;
    const nc = config.listen;
    if (lc.host !== nc.host || lc.port !== nc.port || JSON.stringify(old.config.admin) !== JSON.stringify(config.admin)) {
      this.log.warn('listen and admin addresses change only on restart; kept the running ones');
    }
    return { changed };
  }

  /** The pool of an upstream of the running config (the worker applies the master's health and DNS to it). */
  pool(upstream: string): UpstreamPool | undefined {
    return this.gen.runtimes.get(upstream)?.pool;
  }

  status(): object {
    const gen = this.gen;
    return {
      generation: this.generation,
      reloads: this.reloads,
      config: gen.config.file,
      connections: this.openConnections,
      upstreams: [...gen.runtimes.values()].map((r) => ({
        ...r.pool.snapshot(),
        inflight: r.inflight,
      })),
      process: processStatus(),
    };
  }

  async close(): Promise<void> {
    this.closing = true;
    await this.app.close();
  }
}

/**
 * What a leak looks like from outside, without a debugger (watched by `npm run soak`): live handles by
 * type (sockets, timers...), heap in use, RSS and open file descriptors (null where /proc is absent).
 */
function processStatus(): { handles: Record<string, number>; heapUsed: number; rss: number; fds: number | null } {
  const handles: Record<string, number> = {};
  for (const type of process.getActiveResourcesInfo()) handles[type] = (handles[type] ?? 0) + 1;
  const mem = process.memoryUsage();
  let fds: number | null = null;
  try {
    // minus the descriptor readdir itself opens for the listing
    fds = readdirSync('/proc/self/fd').length - 1;
  } catch {
    fds = null;
  }
  return { handles, heapUsed: mem.heapUsed, rss: mem.rss, fds };
}

/**
 * NGINX's request buffering for small bodies: a body announced by Content-Length and at most
 * body_buffer_size is read whole, then forwarded. Every try sends the same buffer, so a try the
 * server provably never processed (refused connection, REFUSED_STREAM, a stream beyond GOAWAY)
 * is replayed on another connection or server instead of failing a POST with 502 — a streamed
 * body cannot be replayed once its first byte left. A client that goes away while sending closes
 * the response, and finish() releases what the request held.
 */
function readWholeBody(raw: IncomingMessage, length: number, ctx: ProxyRequest, reply: FastifyReply, replyOpts: object): void {
  const whole = Buffer.allocUnsafe(length);
  let received = 0;
  const onData = (chunk: Buffer) => {
    // Content-Length framing: the parser never delivers more than announced
    received += chunk.copy(whole, received);
  };
  raw.on('data', onData);
  raw.once('end', () => {
    raw.removeListener('data', onData);
    if (received !== length || ctx.aborted || reply.raw.destroyed) return;
    ctx.bodyBuffer = whole;
    reply.from('/', replyOpts);
  });
}

function onClientResponseClose(this: ServerResponse): void {
  const res = this as ServerResponse & Record<symbol, unknown>;
  const proxy = res[kProxy] as ProxyServer;
  proxy.finish(this, res[kProxyRequest] as ProxyRequest);
}

function noQueryString(): string {
  return '';
}

function hostnameOf(host: string): string {
  if (host.charCodeAt(0) === 91) {
    const end = host.indexOf(']');
    return host.slice(0, end + 1).toLowerCase();
  }
  const colon = host.indexOf(':');
  return (colon < 0 ? host : host.slice(0, colon)).toLowerCase();
}

const CLIENT_ERROR_STATUS: Record<string, number> = {
  ERR_HTTP_REQUEST_TIMEOUT: 408,
  HPE_HEADER_OVERFLOW: 431,
};

/**
 * Fastify's default answers a client error (bad request line, head over the limit, head not
 * complete within header_timeout) with a JSON body; ours get the same short text as every other
 * error. As Node's own handler does, nothing is written once a response on this connection has
 * started (the bytes would corrupt it); the connection is closed either way.
 */
function onClientError(err: NodeJS.ErrnoException, socket: net.Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const inFlight = (socket as net.Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
  if (socket.writable && (inFlight == null || !inFlight.headersSent)) {
    const status = CLIENT_ERROR_STATUS[err.code ?? ''] ?? 400;
    const text = STATUS_TEXT[status] ?? http.STATUS_CODES[status] ?? '';
    const body = `${status} ${text}\n`;
    socket.write(`HTTP/1.1 ${status} ${text}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
  }
  socket.destroy();
}

function sendShort(reply: FastifyReply, status: number): FastifyReply {
  return reply
    .code(status)
    .header('content-type', 'text/plain; charset=utf-8')
    .send(`${status} ${STATUS_TEXT[status] ?? http.STATUS_CODES[status] ?? ''}\n`);
}

function rewriteResponseHeaders(headers: Record<string, unknown>, request: FastifyRequest): Record<string, unknown> {
  for (let i = 0; i < HOP_BY_HOP.length; i++) if (headers[HOP_BY_HOP[i]] !== undefined) delete headers[HOP_BY_HOP[i]];
  if (headers['x-request-id'] === undefined) headers['x-request-id'] = request.id;
  return headers;
}

function onUpstreamResponse(request: FastifyRequest, reply: FastifyReply, res: { stream: Readable; headers: Record<string, unknown> }): void {
  reply.send(res.stream);
  // Fastify writes the head with the first body chunk; an event stream may stay silent for
  // a long time, so its head goes out now.
  const ct = res.headers['content-type'];
  if (typeof ct === 'string' && ct.startsWith('text/event-stream') && !reply.raw.headersSent) reply.raw.flushHeaders();
  void request;
}

const MAPPED = new Set([413, 431, 502, 503, 504]);

function onUpstreamError(reply: FastifyReply, { error }: { error: Error & { cause?: unknown } }): void {
  const cause = (error.cause ?? error) as UpstreamError;
  if (cause.code === 'GW_CLIENT_ABORTED' || reply.raw.destroyed) {
    reply.raw.destroy();
    return;
  }
  const status = MAPPED.has(cause.statusCode) ? cause.statusCode : 502;
  if (status === 413) reply.header('connection', 'close');
  reply.header('x-request-id', reply.request.id);
  sendShort(reply, status);
}
