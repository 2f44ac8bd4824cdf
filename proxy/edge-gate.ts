// What a routed request meets before it is forwarded: the route's rate zones (limits.rate), its
// concurrency zones (limits.conn), then its static files (routes[].static). A request none of them
// answered goes on to the route's upstream through `forward`. Routes without any of these never
// come here (server.ts checks three fields and forwards at once).
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { LimitKey } from './config/edge.ts';
import { limitKeyValue } from './limit-keys.ts';
import type { ProxyMetrics } from './metrics.ts';
import type { RateLimits } from './rate-limits.ts';
import { sendShort } from './reply-from-adapter.ts';
import type { CompiledRoute, Generation } from './routes.ts';
import type { StaticFiles } from './static-files.ts';

type KeyOf = (zone: { key: LimitKey }) => string;

export class EdgeGate {
  private readonly rateLimits: RateLimits;
  private readonly log: Logger;
  private readonly metrics: ProxyMetrics | null;
  private readonly accessLog: boolean;

  constructor(rateLimits: RateLimits, log: Logger, metrics: ProxyMetrics | null, accessLog: boolean) {
    this.rateLimits = rateLimits;
    this.log = log;
    this.metrics = metrics;
    this.accessLog = accessLog;
  }

  handle(request: FastifyRequest, reply: FastifyReply, route: CompiledRoute, gen: Generation, path: string, forward: () => void): FastifyReply {
    const raw = request.raw;
    const peer = raw.socket.remoteAddress ?? '';
    const keyOf: KeyOf = (z) => limitKeyValue(z.key, peer, raw.headers, gen.trusted);
    const admitted = (): FastifyReply => {
      if (route.conn.length === 0) return this.afterLimits(request, reply, route, path, forward);
      return this.takeConnSlots(request, reply, route, gen, 0, keyOf, () => this.afterLimits(request, reply, route, path, forward));
    };
    if (route.rate.length === 0) return admitted();
    const verdict = this.rateLimits.check(route.rate, keyOf);
    const decide = (v: Awaited<typeof verdict>): FastifyReply => {
      for (const [name, value] of v.headers) reply.header(name, value);
      if (v.status !== 0) {
        // NGINX logs each refusal (limit_req_log_level error): the line users grep for
        this.log.warn({ reqId: request.id, path: raw.url, status: v.status, route: route.label }, v.status === 429 ? 'rate limited' : 'rate limit store unavailable');
        return sendShort(reply, v.status);
      }
      if (v.delayMs > 0) {
        // NGINX's limit_req without nodelay: the burst is let through at the rate, not at once
        setTimeout(() => {
          if (!reply.raw.destroyed) admitted();
        }, v.delayMs);
        return reply;
      }
      return admitted();
    };
    if (!(verdict instanceof Promise)) return decide(verdict);
    verdict.then(decide, (err) => reply.send(err));
    return reply;
  }

  /** Takes a slot of each conn zone in turn (waiting where the zone queues), released when the response closes. */
  private takeConnSlots(request: FastifyRequest, reply: FastifyReply, route: CompiledRoute, gen: Generation, i: number, keyOf: KeyOf, then: () => FastifyReply): FastifyReply {
    if (i === route.conn.length) return then();
    const limit = route.conn[i];
    const zone = gen.config.limits.conn[limit.name];
    const key = zone === undefined ? '' : keyOf(zone);
    if (key === '') return this.takeConnSlots(request, reply, route, gen, i + 1, keyOf, then);
    const res = reply.raw;
    const got = limit.acquire(key, (cancel) => res.once('close', cancel));
    const next = (ok: boolean): FastifyReply => {
      if (res.destroyed) {
        if (ok) limit.release(key);
        return reply;
      }
      if (!ok) {
        this.log.warn({ reqId: request.id, path: request.raw.url, zone: limit.name }, 'connection limit reached');
        return sendShort(reply, 503);
      }
      res.once('close', () => limit.release(key));
      return this.takeConnSlots(request, reply, route, gen, i + 1, keyOf, then);
    };
    if (got === true || got === false) return next(got);
    got.then(next, (err) => reply.send(err));
    return reply;
  }

  private afterLimits(request: FastifyRequest, reply: FastifyReply, route: CompiledRoute, path: string, forward: () => void): FastifyReply {
    if (route.static === null) {
      forward();
      return reply;
    }
    const raw = request.raw;
    const url = raw.url as string;
    const q = url.indexOf('?');
    const started = performance.now();
    const socket = raw.socket;
    const bytesOutMark = socket.bytesWritten;
    let answer: ReturnType<StaticFiles['serve']>;
    try {
      answer = route.static.serve(raw as { method: string; headers: IncomingMessage['headers'] }, path, q < 0 ? '' : url.slice(q));
    } catch (err) {
      // an I/O error reading a file that exists (EIO, EACCES after open): the error handler's 500
      reply.send(err);
      return reply;
    }
    if (answer.kind === 'upstream') {
      if (route.runtime === null) return sendShort(reply, 404);
      forward();
      return reply;
    }
    reply.raw.once('close', () => this.finished(reply.raw, request, route, started, socket.bytesWritten - bytesOutMark));
    reply.code(answer.status).headers(answer.headers as Record<string, string>);
    reply.send(answer.body ?? undefined);
    return reply;
  }

  /** Access line and metrics of an answer the proxy gave from disk, as the exchange's end does for forwarded ones. */
  private finished(res: ServerResponse, request: FastifyRequest, route: CompiledRoute, started: number, bytes: number): void {
    const status = res.writableFinished ? res.statusCode : 499;
    const ms = performance.now() - started;
    this.metrics?.requestFinished(route.label, 'static', status, ms / 1000, 0, bytes);
    if (this.accessLog) {
      this.log.info({ reqId: request.id, method: request.raw.method, path: request.raw.url, status, bytes, upstream: 'static', upstream_ms: null, ms: Math.round(ms * 100) / 100 }, 'access');
    }
  }
}
