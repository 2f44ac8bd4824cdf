// Prometheus metrics of the proxy, on a registry of its own (not prom-client's
// global one) so that several proxies in one process (tests, reloads) never clash.
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

/** Seconds; from a fast loopback hop to NGINX-like slow requests. */
const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export type UpstreamOutcome = 'ok' | 'error' | 'timeout';

export class ProxyMetrics {
  readonly registry: Registry;
  readonly requests: Counter<'route' | 'upstream' | 'status'>;
  readonly requestDuration: Histogram<'route' | 'upstream'>;
  readonly upstreamDuration: Histogram<'upstream' | 'host' | 'outcome'>;
  readonly retries: Counter<'upstream'>;
  readonly hostUp: Gauge<'upstream' | 'host'>;
  readonly bytesIn: Counter<'route' | 'upstream'>;
  readonly bytesOut: Counter<'route' | 'upstream'>;
  readonly healthTransitions: Counter<'upstream' | 'host' | 'to'>;
  /** Open client connections. */
  readonly connections: Gauge;
  /** Requests in flight to each upstream server (gatewire streams, uwsgi/http requests). */
  readonly upstreamStreams: Gauge<'upstream' | 'host'>;

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    this.registry = new Registry();
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
    const registers = [this.registry];
    this.requests = new Counter({
      name: 'gatewire_http_requests_total',
      help: 'Client requests answered, by route, upstream and status code.',
      labelNames: ['route', 'upstream', 'status'],
      registers,
    });
    this.requestDuration = new Histogram({
      name: 'gatewire_http_request_duration_seconds',
      help: 'Time from a client request to the end of its response.',
      labelNames: ['route', 'upstream'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.upstreamDuration = new Histogram({
      name: 'gatewire_upstream_request_duration_seconds',
      help: 'Time of each try against an upstream server, by outcome.',
      labelNames: ['upstream', 'host', 'outcome'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.retries = new Counter({
      name: 'gatewire_upstream_retries_total',
      help: 'Requests retried on another server of the upstream.',
      labelNames: ['upstream'],
      registers,
    });
    this.hostUp = new Gauge({
      name: 'gatewire_upstream_host_up',
      help: 'Health of each upstream server per active health checks (1 up, 0 down).',
      labelNames: ['upstream', 'host'],
      registers,
    });
    this.healthTransitions = new Counter({
      name: 'gatewire_upstream_health_transitions_total',
      help: 'Active health state changes of upstream servers.',
      labelNames: ['upstream', 'host', 'to'],
      registers,
    });
    this.bytesIn = new Counter({
      name: 'gatewire_http_request_bytes_total',
      help: 'Request body bytes received from clients.',
      labelNames: ['route', 'upstream'],
      registers,
    });
    this.bytesOut = new Counter({
      name: 'gatewire_http_response_bytes_total',
      help: 'Response body bytes sent to clients.',
      labelNames: ['route', 'upstream'],
      registers,
    });
    this.connections = new Gauge({ name: 'gatewire_connections_open', help: 'Open client connections.', registers });
    this.upstreamStreams = new Gauge({
      name: 'gatewire_upstream_streams',
      help: 'Requests in flight to each upstream server.',
      labelNames: ['upstream', 'host'],
      registers,
    });
  }

  requestFinished(route: string, upstream: string, status: number, seconds: number, bytesIn: number, bytesOut: number): void {
    this.requests.inc({ route, upstream, status: String(status) });
    this.requestDuration.observe({ route, upstream }, seconds);
    if (bytesIn > 0) this.bytesIn.inc({ route, upstream }, bytesIn);
    if (bytesOut > 0) this.bytesOut.inc({ route, upstream }, bytesOut);
  }

  upstreamRequest(upstream: string, host: string, seconds: number, outcome: UpstreamOutcome): void {
    this.upstreamDuration.observe({ upstream, host, outcome }, seconds);
  }

  retry(upstream: string): void {
    this.retries.inc({ upstream });
  }

  setHostHealth(upstream: string, host: string, up: boolean): void {
    this.hostUp.set({ upstream, host }, up ? 1 : 0);
  }

  healthTransition(upstream: string, host: string, up: boolean): void {
    this.healthTransitions.inc({ upstream, host, to: up ? 'up' : 'down' });
    this.setHostHealth(upstream, host, up);
  }

  /** Drops the per-host series of a server that left its pool (DNS removal, reload). */
  removeHost(upstream: string, host: string): void {
    this.hostUp.remove({ upstream, host });
    this.upstreamStreams.remove({ upstream, host });
  }

  /** Prometheus text exposition. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
