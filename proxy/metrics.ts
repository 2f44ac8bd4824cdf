// Prometheus metrics of the proxy, on a registry of its own (not prom-client's
// global one) so that several proxies in one process (tests, reloads) never clash.
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { EdgeMetrics } from './edge-metrics.ts';

/** Seconds; from a fast loopback hop to NGINX-like slow requests. */
const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export type UpstreamOutcome = 'ok' | 'error' | 'timeout';

// Per-request metrics without prom-client's per-call cost. prom-client resolves the labels of every
// inc()/observe() (label object, validation, a hash string, a closure per observe): ~1.2 µs and
// several allocations per proxied request for the five updates, measured. A series here is resolved
// once through the public API (inc(labels, 0) / zero(labels) create prom-client's own entry) and
// then updated in place, so scrapes read exactly what prom-client would have counted. This relies
// on prom-client's per-series entry shape (counter {value}, histogram {bucketValues, sum, count} in
// `hashMap`, as of prom-client 15); the metrics test checks the exposition. A reset() of the metric
// replaces `hashMap`, which live() notices, and the series is resolved again.

type SeriesMap = Record<string, { labels: object } & Record<string, unknown>>;
type WithSeries = { hashMap: SeriesMap; labelNames: string[] };

function findSeries(metric: WithSeries, labels: Record<string, string>): { labels: object } & Record<string, unknown> {
  const names = metric.labelNames;
  for (const key in metric.hashMap) {
    const entry = metric.hashMap[key];
    const l = entry.labels as Record<string, string>;
    let same = true;
    for (let i = 0; i < names.length && same; i++) same = l[names[i]] === labels[names[i]];
    if (same) return entry;
  }
  throw new Error('prom-client series not found: its internal layout changed');
}

class CounterSeries {
  private readonly owner: WithSeries;
  private readonly map: SeriesMap;
  private readonly entry: { value: number };
  constructor(counter: Counter<string>, labels: Record<string, string>) {
    counter.inc(labels, 0); // creates the series if absent, public API
    this.owner = counter as unknown as WithSeries;
    this.map = this.owner.hashMap;
    this.entry = findSeries(this.owner, labels) as unknown as { value: number };
  }
  live(): boolean {
    return this.owner.hashMap === this.map;
  }
  add(n: number): void {
    this.entry.value += n;
  }
}

class HistogramSeries {
  private readonly owner: WithSeries;
  private readonly map: SeriesMap;
  private readonly entry: { bucketValues: Record<number, number>; sum: number; count: number };
  private readonly bounds: number[];
  constructor(histogram: Histogram<string>, labels: Record<string, string>) {
    this.owner = histogram as unknown as WithSeries;
    if (!hasSeries(this.owner, labels)) histogram.zero(labels);
    this.map = this.owner.hashMap;
    this.entry = findSeries(this.owner, labels) as unknown as HistogramSeries['entry'];
    this.bounds = (histogram as unknown as { upperBounds: number[] }).upperBounds;
  }
  live(): boolean {
    return this.owner.hashMap === this.map;
  }
  observe(v: number): void {
    if (!Number.isFinite(v)) return;
    const e = this.entry;
    e.sum += v;
    e.count += 1;
    const bounds = this.bounds;
    for (let i = 0; i < bounds.length; i++) {
      if (v <= bounds[i]) {
        e.bucketValues[bounds[i]] += 1;
        return;
      }
    }
  }
}

function hasSeries(metric: WithSeries, labels: Record<string, string>): boolean {
  try {
    findSeries(metric, labels);
    return true;
  } catch {
    return false;
  }
}

/** The series one (route, upstream) pair updates per request. */
class RouteSeries {
  readonly requests = new Map<number, CounterSeries>();
  duration: HistogramSeries | null = null;
  bytesIn: CounterSeries | null = null;
  bytesOut: CounterSeries | null = null;
}

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
  /** Static files, compression, rate and connection limits. */
  readonly edge: EdgeMetrics;
  /** Upgraded connections (WebSocket…) open through the proxy. */
  readonly tunnelsOpen: Gauge;
  /** Upgrade requests by the answer they got (101, or the refusal's status). */
  readonly upgrades: Counter<'route' | 'upstream' | 'status'>;
  /** Bytes relayed by tunnels once closed: `up` client → upstream, `down` upstream → client. */
  readonly tunnelBytes: Counter<'direction'>;
  /** Per-request series, resolved once (route → upstream). */
  private readonly routeSeries = new Map<string, Map<string, RouteSeries>>();
  /** upstream → "outcome host" → series. */
  private readonly upstreamSeries = new Map<string, Map<string, HistogramSeries>>();

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    this.registry = new Registry();
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
    const registers = [this.registry];
    this.edge = new EdgeMetrics(this.registry);
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
    this.tunnelsOpen = new Gauge({ name: 'gatewire_tunnels_open', help: 'Upgraded connections (WebSocket and other HTTP Upgrade protocols) open through the proxy.', registers });
    this.upgrades = new Counter({
      name: 'gatewire_upgrades_total',
      help: 'Upgrade requests (HTTP/1.1 Upgrade, HTTP/2 extended CONNECT), by route, upstream and the status answered (101 when tunnelled).',
      labelNames: ['route', 'upstream', 'status'],
      registers,
    });
    this.tunnelBytes = new Counter({
      name: 'gatewire_tunnel_bytes_total',
      help: 'Bytes relayed by tunnels (counted as they flow, at most one idle-sweep period late): up (client to upstream), down (upstream to client).',
      labelNames: ['direction'],
      registers,
    });
  }

  upgradeFinished(route: string, upstream: string, status: number): void {
    this.upgrades.inc({ route, upstream, status: String(status) });
  }

  tunnelOpened(): void {
    this.tunnelsOpen.inc();
  }

  /** A tunnel closed; the bytes it relayed since they were last counted. */
  tunnelClosed(bytesUp: number, bytesDown: number): void {
    this.tunnelsOpen.dec();
    this.tunnelBytesRelayed(bytesUp, bytesDown);
  }

  tunnelBytesRelayed(bytesUp: number, bytesDown: number): void {
    if (bytesUp > 0) this.tunnelBytes.inc({ direction: 'up' }, bytesUp);
    if (bytesDown > 0) this.tunnelBytes.inc({ direction: 'down' }, bytesDown);
  }

  requestFinished(route: string, upstream: string, status: number, seconds: number, bytesIn: number, bytesOut: number): void {
    let byUpstream = this.routeSeries.get(route);
    if (byUpstream === undefined) this.routeSeries.set(route, (byUpstream = new Map()));
    let series = byUpstream.get(upstream);
    if (series === undefined) byUpstream.set(upstream, (series = new RouteSeries()));
    let requests = series.requests.get(status);
    if (requests === undefined || !requests.live()) {
      requests = new CounterSeries(this.requests, { route, upstream, status: String(status) });
      series.requests.set(status, requests);
    }
    requests.add(1);
    let duration = series.duration;
    if (duration === null || !duration.live()) series.duration = duration = new HistogramSeries(this.requestDuration, { route, upstream });
    duration.observe(seconds);
    if (bytesIn > 0) {
      let c = series.bytesIn;
      if (c === null || !c.live()) series.bytesIn = c = new CounterSeries(this.bytesIn, { route, upstream });
      c.add(bytesIn);
    }
    if (bytesOut > 0) {
      let c = series.bytesOut;
      if (c === null || !c.live()) series.bytesOut = c = new CounterSeries(this.bytesOut, { route, upstream });
      c.add(bytesOut);
    }
  }

  upstreamRequest(upstream: string, host: string, seconds: number, outcome: UpstreamOutcome): void {
    const key = `${outcome} ${host}`;
    let byHost = this.upstreamSeries.get(upstream);
    if (byHost === undefined) this.upstreamSeries.set(upstream, (byHost = new Map()));
    let series = byHost.get(key);
    if (series === undefined || !series.live()) {
      series = new HistogramSeries(this.upstreamDuration, { upstream, host, outcome });
      byHost.set(key, series);
    }
    series.observe(seconds);
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
