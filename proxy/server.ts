// The edge, top to bottom: HTTP in (listener.ts, Fastify's one catch-all
// route) → route (routes.ts) → exchange (exchange.ts: body, retries, timing)
// → forwarding layer (reply-from-adapter.ts) → the upstream's policy and
// transport → frames; the response comes back the same way and the
// exchange's end writes the access line and the metrics.
//
// Config generations: reload() builds a new Generation (routes + upstream
// runtimes) and swaps it in for new requests; a request keeps the runtime it
// started with, and runtimes the new config no longer uses are retired once
// their last exchange ended.
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import pino, { type Logger } from 'pino';
import { boundUrl, hostnameOf } from '../protocol/addresses.ts';
import { logAccess } from './access-log.ts';
import type { ProxyConfig } from './config.ts';
import { type ExchangeContext, ProxyExchange } from './exchange.ts';
import { listenerFactory, onClientError } from './listener.ts';
import type { ProxyMetrics } from './metrics.ts';
import { processStatus } from './process-status.ts';
import { registerForwarding, sendShort, sendUpstreamError } from './reply-from-adapter.ts';
import { requestLoggerFactory } from './request-logger.ts';
import { climbsAboveRoot } from './request-target.ts';
import { type CompiledRoute, Generation } from './routes.ts';
import { EdgeGate } from './edge-gate.ts';
import { RateLimits } from './rate-limits.ts';
import { TimeoutSweeper } from './transports/base.ts';
import { TunnelManager } from './tunnels.ts';
import type { UpstreamError } from './errors.ts';
import type { RuntimeOptions } from './upstream-runtime.ts';
import type { UpstreamPool } from './upstreams.ts';

export interface ProxyServerOptions extends RuntimeOptions {
  logger?: Logger;
}

const kExchange = Symbol('gatewire.exchange');
type TrackedResponse = ServerResponse & { [kExchange]?: ProxyExchange; [kProxy]?: ProxyServer };
const kProxy = Symbol('gatewire.proxy');

export class ProxyServer {
  readonly app: FastifyInstance;
  readonly log: Logger;
  private gen: Generation;
  private readonly metrics: ProxyMetrics | null;
  private readonly opts: ProxyServerOptions;
  private readonly exchangeContext: ExchangeContext;
  private readonly forward: (reply: FastifyReply, ex: ProxyExchange) => void;
  private generation = 1;
  private reloads = 0;
  private openConnections = 0;
  private gaugeTimer: NodeJS.Timeout | null = null;
  private readonly accessLog: boolean;
  private closing = false;
  private readonly rateLimits: RateLimits;
  private readonly edge: EdgeGate;
  /** Upgraded connections (WebSocket, HTTP Upgrade, h2 extended CONNECT): tunnels.ts. */
  readonly tunnels: TunnelManager;

  constructor(config: ProxyConfig, opts: ProxyServerOptions = {}) {
    this.opts = opts;
    this.log = opts.logger ?? pino({ level: config.log.level, base: { name: 'gatewire-proxy' } });
    this.metrics = opts.metrics ?? null;
    this.accessLog = config.log.access;
    this.gen = new Generation(config, null, opts, this.log);
    this.rateLimits = new RateLimits(config.limits.rate, config.limits.store, this.metrics?.edge ?? null, this.log);
    this.edge = new EdgeGate(this.rateLimits, this.log, this.metrics, this.accessLog);
    this.exchangeContext = {
      metrics: this.metrics,
      bodySweeper: new TimeoutSweeper(Math.max(50, Math.min(1000, Math.floor(config.limits.body_timeout_ms / 4)))),
      bodyTimeoutMs: config.limits.body_timeout_ms,
      serverPort: config.listen.port,
      scheme: config.listen.tls ? 'https' : 'http',
    };
    this.app = this.buildApp(config);
    this.forward = registerForwarding(this.app, () => this.gen);
    this.tunnels = new TunnelManager(
      { log: this.log, metrics: this.metrics, accessLog: this.accessLog, scheme: this.exchangeContext.scheme, serverPort: config.listen.port },
      () => this.gen,
    );
    this.tunnels.attach(this.app.server as unknown as HttpServer, config.listen.http2);
    // Returns nothing: a reply handed back to Fastify is a thenable it waits on, through
    // stream.finished() on the response (five listeners and ~2 KB per request for nothing: the
    // exchange ends the response itself).
    const handler = (request: FastifyRequest, reply: FastifyReply): void => {
      this.handle(request, reply);
    };
    this.app.all('/', handler);
    this.app.all('/*', handler);
  }

  get config(): ProxyConfig {
    return this.gen.config;
  }

  private buildApp(config: ProxyConfig): FastifyInstance {
    const app = (Fastify as unknown as (o: object) => FastifyInstance)({
      loggerInstance: this.log,
      logController: new (Fastify as unknown as { LogController: new (o: object) => unknown }).LogController({ disableRequestLogging: true }),
      childLoggerFactory: requestLoggerFactory,
      genReqId: (req: IncomingMessage) => {
        const id = req.headers['x-request-id'];
        return typeof id === 'string' && id.length > 0 && id.length <= 200 ? id : randomUUID();
      },
      // a request on a connection already accepted is served during a graceful stop, as NGINX does;
      // handle() answers it with `connection: close` and the exchange's end closes the connection
      return503OnClosing: false,
      clientErrorHandler: onClientError,
      http2: config.listen.http2 as false,
      serverFactory: listenerFactory(config, {
        opened: () => {
          this.openConnections++;
          this.metrics?.connections.inc();
        },
        closed: () => {
          this.openConnections--;
          this.metrics?.connections.dec();
        },
      }),
    });
    // Bodies stream through untouched: no parser buffers them (the exchange takes the raw stream).
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));
    app.setErrorHandler((err: Error & { statusCode?: number }, request, reply) => {
      // the upstream's body broke before the client head went out: an upstream fault like any other
      // (NGINX: "upstream sent invalid chunked response" → 502), whatever the stream's own error says
      const ex = (reply.raw as TrackedResponse)[kExchange];
      const code = err.statusCode;
      const status = code === 504 || code === 408 || code === 413 ? code : ex?.responded === true ? 502 : code !== undefined && code >= 400 && code < 500 ? code : 500;
      if (status >= 500) request.log.error({ err }, 'request failed');
      sendShort(reply, status);
    });
    app.setNotFoundHandler((_request, reply) => sendShort(reply, 404));
    app.addHook('onClose', async () => {
      if (this.gaugeTimer) clearInterval(this.gaugeTimer);
      this.exchangeContext.bodySweeper.stop();
      await Promise.all([...this.gen.runtimes.values()].map((r) => r.retire(true)));
      await this.rateLimits.close();
    });
    return app;
  }

  private handle(request: FastifyRequest, reply: FastifyReply): FastifyReply | undefined {
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
    const hostname = hostnameOf(raw.headers.host ?? (raw.headers[':authority'] as string | undefined) ?? '');
    const gen = this.gen;
    const match = gen.match(hostname, path);
    if (this.closing) reply.header('connection', 'close');
    if (match === null) return sendShort(reply, 404);
    const route = match.route;
    if (match.redirect) {
      return reply
        .code(301)
        .header('location', `${route.prefix}${q < 0 ? '' : url.slice(q)}`)
        .header('content-type', 'text/plain; charset=utf-8')
        .send(`301 Moved Permanently\n`);
    }
    // rate and connection limits, static files: only for routes that have them
    if (route.rate.length > 0 || route.conn.length > 0 || route.static !== null) return this.edge.handle(request, reply, route, gen, path, () => this.toUpstream(request, reply, route, hostname));
    return this.toUpstream(request, reply, route, hostname);
  }

  private toUpstream(request: FastifyRequest, reply: FastifyReply, route: CompiledRoute, hostname: string): FastifyReply {
    const raw = request.raw;
    const runtime = route.runtime;
    if (runtime === null) return sendShort(reply, 404);
    const cl = raw.headers['content-length'];
    if (cl !== undefined && Number(cl) > runtime.cfg.max_body) {
      reply.header('connection', 'close');
      return sendShort(reply, 413);
    }
    request.gwCompress = route.compression;
    const ex = new ProxyExchange(this.exchangeContext, { runtime, label: route.label, stripped: route.strip ? route.prefix : '' }, raw, reply.raw, request.id, hostname);
    const res = reply.raw as TrackedResponse;
    res[kExchange] = ex;
    res[kProxy] = this;
    res.once('close', onResponseClose);
    ex.onEarlyFailure = (err: UpstreamError) => sendUpstreamError(reply, err);
    ex.takeBody(() => this.forward(reply, ex));
    return reply;
  }

  /** The client response closed (finished or aborted): the exchange ends; access line and metrics. */
  ended(res: ServerResponse, ex: ProxyExchange): void {
    const status = ex.end();
    // stopping: a keep-alive connection whose exchange ended is not kept (server.close waits for it)
    if (this.closing) ex.socket.destroySoon();
    const ms = performance.now() - ex.startedAt;
    const bytes = ex.clientBytes();
    this.metrics?.requestFinished(ex.route.label, ex.runtime.name, status, ms / 1000, bytes.in, bytes.out);
    // a head Fastify wrote in one writeHead() (a whole body, an error) leaves getHeader() empty
    if (this.accessLog) logAccess(this.log, ex, status, res.getHeader('x-request-id') ?? ex.requestId, bytes.out, ms);
  }

  /**
   * Starts the upstreams and listens, on the config's address or on a bound socket handle inherited
   * from a supervisor (proxy/worker.ts); returns the URL of the address actually bound.
   */
  async listen(handle?: object): Promise<string> {
    const { host, port } = this.gen.config.listen;
    for (const r of this.gen.runtimes.values()) r.start();
    const scheme = this.gen.config.listen.tls ? 'https' : 'http';
    // Fastify names one line per interface of a wildcard address ("127.0.0.1", "192.0.2.2"): the
    // log says what was bound, then where it can be reached
    let first = true;
    const listenTextResolver = (address: string) => {
      const bound = boundUrl(this.app.server.address(), scheme);
      const text = first ? `listening on ${bound}${bound.endsWith(address.replace(/^https?:\/\//, '')) ? '' : ` (reachable at ${address})`}` : `reachable at ${address}`;
      first = false;
      return text;
    };
    // with a handle, `host` only keeps Fastify from also binding ::1 for "localhost"
    await this.app.listen(handle ? ({ handle, host: '127.0.0.1', listenTextResolver } as object) : { host, port, listenTextResolver });
    this.gaugeTimer = setInterval(() => this.updateGauges(), 1000);
    this.gaugeTimer.unref();
    return boundUrl(this.app.server.address(), scheme);
  }

  private updateGauges(): void {
    const m = this.metrics;
    if (m === null) return;
    for (const r of this.gen.runtimes.values()) {
      for (const h of r.pool.hosts) m.upstreamStreams.set({ upstream: r.name, host: h.address }, h.inflight);
    }
  }

  /** Swaps in a new config for new requests; in-flight ones finish on the runtimes they started with. */
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
    this.rateLimits.update(config.limits.rate, config.limits.store);
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

  /** The pool of an upstream of the running config (a worker applies the master's health and DNS to it). */
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
      upstreams: [...gen.runtimes.values()].map((r) => ({ ...r.pool.snapshot(), inflight: r.inflight })),
      process: processStatus(),
    };
  }

  /** Graceful stop; open tunnels are served for `tunnelGraceMs`, then closed (the listener waits for them). */
  async close(tunnelGraceMs = 0): Promise<void> {
    this.closing = true;
    await Promise.all([this.tunnels.close(tunnelGraceMs), this.app.close()]);
  }
}

function onResponseClose(this: TrackedResponse): void {
  const ex = this[kExchange] as ProxyExchange;
  (this[kProxy] as ProxyServer).ended(this, ex);
}
