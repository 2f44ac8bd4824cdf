// The admin server: a separate small Fastify instance (default 127.0.0.1:9901, never
// the public listener) with GET /metrics, /status and /healthz — NGINX's
// stub_status, in Prometheus and JSON.
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';

/** What /metrics serves: a ProxyMetrics, or the master's sum over its workers (proxy/master.ts). */
export interface MetricsSource {
  readonly contentType: string;
  text(): Promise<string>;
}

export interface AdminServer {
  close(): Promise<void>;
  /** "127.0.0.1:9901" (the real port when 0 was asked for). */
  address: string;
  port: number;
}

export async function startAdmin(opts: {
  host: string;
  port: number;
  metrics: MetricsSource;
  status: () => object | Promise<object>;
  logger?: FastifyBaseLogger;
}): Promise<AdminServer> {
  const app = (Fastify as unknown as (o: object) => FastifyInstance)({
    ...(opts.logger ? { loggerInstance: opts.logger.child({ component: 'admin' }) } : { logger: false }),
    // Prometheus scrapes every few seconds: one log line each is noise. (Fastify 5.x deprecated the
    // top-level disableRequestLogging in favour of a LogController.)
    logController: new (Fastify as unknown as { LogController: new (o: object) => unknown }).LogController({ disableRequestLogging: true }),
  });
  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', opts.metrics.contentType);
    return opts.metrics.text();
  });
  app.get('/status', async () => opts.status());
  app.get('/healthz', async (_req, reply) => {
    reply.type('text/plain; charset=utf-8');
    return 'ok';
  });
  await app.listen({ host: opts.host, port: opts.port });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : opts.port;
  const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  return {
    address: `${host}:${port}`,
    port,
    close: () => app.close(),
  };
}
