// Helpers for the proxy pool tests: an UpstreamConfig with the documented defaults,
// hosts by letter, a silent logger that keeps what it was told.
import type { ServerConfig, UpstreamConfig } from '../../proxy/config.ts';
import { Host } from '../../proxy/hosts.ts';
import type { SelectionContext } from '../../proxy/selection-policies.ts';
import type { PoolLogger } from '../../proxy/upstreams.ts';

export function upstreamConfig(over: Omit<Partial<UpstreamConfig>, 'servers'> & { servers: Array<Partial<ServerConfig> & { address: string }> }): UpstreamConfig {
  return {
    name: 'app',
    protocol: 'gatewire',
    balance: 'round_robin',
    hash_key: null,
    max_fails: 1,
    fail_timeout_ms: 10_000,
    health_check: null,
    connections_per_server: 4,
    timeouts: { connect_ms: 2000, read_ms: 60_000, send_ms: 60_000, tunnel_idle_ms: 3_600_000 },
    retries: { tries: 2, methods: ['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE'] },
    max_body: 1024 * 1024,
    body_buffer_size: 64 * 1024,
    resolve_interval_ms: 5000,
    resolver: { servers: [], timeout_ms: 2000 },
    queue: { size: 0, timeout_ms: 5000 },
    ...over,
    servers: over.servers.map((s) => ({ ...s, weight: s.weight ?? 1, backup: s.backup ?? false, resolve: s.resolve ?? false })),
  };
}

/** Hosts named a, b, c, ... (address "a:1") with the given weights. */
export function lettered(weights: number[]): Host[] {
  return weights.map((weight, i) => new Host({ address: `${String.fromCharCode(97 + i)}:1`, weight }));
}

export const letter = (h: Host | null): string => (h ? h.address.slice(0, h.address.indexOf(':')) : '-');

export function ctx(over: Partial<SelectionContext> = {}): SelectionContext {
  return { clientIp: '127.0.0.1', headers: {}, url: '/', ...over };
}

export interface RecordingLogger extends PoolLogger {
  lines: Array<{ level: 'info' | 'warn'; msg: string; obj: Record<string, unknown> }>;
}

export function recordingLogger(): RecordingLogger {
  const lines: RecordingLogger['lines'] = [];
  return {
    lines,
    info: (obj, msg = '') => lines.push({ level: 'info', msg, obj: obj as Record<string, unknown> }),
    warn: (obj, msg = '') => lines.push({ level: 'warn', msg, obj: obj as Record<string, unknown> }),
  };
}
