// Metrics of the edge features (static files, compression, rate and connection limits), on the
// proxy's registry. Their series are few (per route, zone or encoding) and each update is a
// prom-client call: these paths do file or zlib work that dwarfs it.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Encoding } from './config/edge.ts';

const WAIT_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export type RateOutcome = 'passed' | 'delayed' | 'rejected' | 'dry_run_rejected';

export class EdgeMetrics {
  readonly staticHits: Counter<'route'>;
  readonly staticBytes: Counter<'route'>;
  readonly compressedResponses: Counter<'encoding'>;
  readonly compressionBytesIn: Counter<'encoding'>;
  readonly compressionBytesSaved: Counter<'encoding'>;
  readonly rateLimit: Counter<'zone' | 'outcome'>;
  readonly storeErrors: Counter<'store' | 'action'>;
  readonly connRejected: Counter<'limit'>;
  readonly queueDepth: Gauge<'limit'>;
  readonly queueWait: Histogram<'limit' | 'outcome'>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.staticHits = new Counter({ name: 'gatewire_static_responses_total', help: 'Files served from disk (2xx), by route.', labelNames: ['route'], registers });
    this.staticBytes = new Counter({ name: 'gatewire_static_bytes_total', help: 'File bytes served from disk, by route.', labelNames: ['route'], registers });
    this.compressedResponses = new Counter({ name: 'gatewire_compressed_responses_total', help: 'Responses compressed on the fly, by encoding.', labelNames: ['encoding'], registers });
    this.compressionBytesIn = new Counter({ name: 'gatewire_compression_input_bytes_total', help: 'Bytes fed to the compressor, by encoding.', labelNames: ['encoding'], registers });
    this.compressionBytesSaved = new Counter({ name: 'gatewire_compression_saved_bytes_total', help: 'Bytes the compressor saved (input minus output), by encoding.', labelNames: ['encoding'], registers });
    this.rateLimit = new Counter({
      name: 'gatewire_rate_limit_requests_total',
      help: 'Requests checked against a rate zone: passed, delayed to the rate (nodelay: false), rejected (429), or over the rate in dry_run (passed, only counted).',
      labelNames: ['zone', 'outcome'],
      registers,
    });
    this.storeErrors = new Counter({
      name: 'gatewire_limit_store_errors_total',
      help: 'Rate checks the shared store could not answer, by the on_store_error action taken.',
      labelNames: ['store', 'action'],
      registers,
    });
    this.connRejected = new Counter({ name: 'gatewire_conn_limit_rejected_total', help: 'Requests answered 503 by a connection limit (queue full or wait timed out).', labelNames: ['limit'], registers });
    this.queueDepth = new Gauge({ name: 'gatewire_conn_limit_queue_depth', help: 'Requests waiting for a slot of a connection limit.', labelNames: ['limit'], registers });
    this.queueWait = new Histogram({
      name: 'gatewire_conn_limit_queue_wait_seconds',
      help: 'Time requests waited in a connection-limit queue, by outcome (admitted or timeout).',
      labelNames: ['limit', 'outcome'],
      buckets: WAIT_BUCKETS,
      registers,
    });
  }

  staticHit(route: string, bytes: number): void {
    this.staticHits.inc({ route });
    if (bytes > 0) this.staticBytes.inc({ route }, bytes);
  }

  compressed(encoding: Encoding, bytesIn: number, bytesOut: number): void {
    this.compressedResponses.inc({ encoding });
    this.compressionBytesIn.inc({ encoding }, bytesIn);
    if (bytesIn > bytesOut) this.compressionBytesSaved.inc({ encoding }, bytesIn - bytesOut);
  }

  rate(zone: string, outcome: RateOutcome): void {
    this.rateLimit.inc({ zone, outcome });
  }

  storeError(store: string, action: 'allow' | 'deny'): void {
    this.storeErrors.inc({ store, action });
  }
}
