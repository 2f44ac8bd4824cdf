// Routing: a config generation's routes compiled for matching (host, then
// longest path prefix, like NGINX's server + location), with the upstream
// runtimes they point at. SIGHUP builds a new Generation and swaps it in for
// new requests; a request keeps the runtime it started with.
import type { Logger } from 'pino';
import { compileNetworks } from '../protocol/trusted-networks.ts';
import type { ProxyConfig } from './config.ts';
import { Compression } from './compression.ts';
import { ConcurrencyLimit } from './conn-limits.ts';
import { StaticFiles } from './static-files.ts';
import { type RuntimeOptions, UpstreamRuntime } from './upstream-runtime.ts';

export interface CompiledRoute {
  /** Lowercase exact host, ".example.com" for "*.example.com", or null for any. */
  host: string | null;
  wildcard: boolean;
  prefix: string;
  strip: boolean;
  /** Upgrade requests (WebSocket…) are tunnelled (tunnels.ts); false: forwarded as ordinary requests. */
  upgrade: boolean;
  /** null: a static-only route. */
  runtime: UpstreamRuntime | null;
  label: string;
  /** routes[].static, compiled; null for a route that only forwards. */
  static: StaticFiles | null;
  compression: Compression | null;
  /** Names of the limits.rate zones the route is checked against. */
  rate: string[];
  /** The limits.conn zones the route takes a slot of. */
  conn: ConcurrencyLimit[];
}

/** A matched route, or the bare form of a prefix ending in "/" (NGINX answers it with a 301 to the prefix). */
export interface RouteMatch {
  route: CompiledRoute;
  redirect: boolean;
}

export class Generation {
  readonly config: ProxyConfig;
  readonly routes: CompiledRoute[];
  readonly runtimes: Map<string, UpstreamRuntime>;
  /** limits.conn zones by name; one is kept from the previous generation while its config is unchanged. */
  readonly connZones: Map<string, { key: string; limit: ConcurrencyLimit }>;
  /** Whether a peer's X-Forwarded-* are trusted (trust_proxy). */
  readonly trusted: (ip: string) => boolean;

  constructor(config: ProxyConfig, previous: Generation | null, opts: RuntimeOptions, log: Logger) {
    this.config = config;
    this.runtimes = new Map();
    for (const [name, cfg] of Object.entries(config.upstreams)) {
      const key = JSON.stringify(cfg);
      const old = previous?.runtimes.get(name);
      this.runtimes.set(name, old && old.key === key ? old : new UpstreamRuntime(cfg, key, opts, log));
    }
    const edge = opts.metrics?.edge ?? null;
    this.connZones = new Map();
    for (const z of Object.values(config.limits.conn)) {
      const key = JSON.stringify(z);
      const old = previous?.connZones.get(z.name);
      this.connZones.set(z.name, old && old.key === key ? old : { key, limit: new ConcurrencyLimit(z, edge) });
    }
    this.routes = config.routes.map((r) => {
      const h = r.match.host?.toLowerCase() ?? null;
      const wildcard = h?.startsWith('*.') ?? false;
      const label = `${r.match.host ?? ''}${r.match.path_prefix}`;
      const compression = r.compress ? new Compression(r.compress, edge) : null;
      return {
        host: wildcard ? (h as string).slice(1) : h,
        wildcard,
        prefix: r.match.path_prefix,
        strip: r.strip_prefix,
        // a static-only route has no upstream to tunnel to
        upgrade: r.upgrade && r.upstream !== null,
        runtime: r.upstream === null ? null : (this.runtimes.get(r.upstream) as UpstreamRuntime),
        label,
        static: r.static ? new StaticFiles(r.static, { prefix: r.match.path_prefix, strip: r.strip_prefix, label }, compression, edge) : null,
        compression,
        rate: r.limits.rate,
        conn: r.limits.conn.map((n) => (this.connZones.get(n) as { limit: ConcurrencyLimit }).limit),
      };
    });
    // NGINX order: exact host, wildcard host, any host; within one, the longest prefix.
    const rank = (r: CompiledRoute) => (r.host === null ? 2 : r.wildcard ? 1 : 0);
    this.routes.sort((a, b) => rank(a) - rank(b) || b.prefix.length - a.prefix.length);
    const trust = config.trust_proxy;
    this.trusted = trust === true ? () => true : trust === false ? () => false : compileNetworks(trust);
  }

  /**
   * The route for a request. A path equal to a prefix ending in "/" minus that slash ("/app" for
   * "/app/") is a redirect to the prefix, as NGINX does for a proxied location, unless a route
   * matches that exact path with a longer prefix ("/app" itself).
   */
  match(hostname: string, path: string): RouteMatch | null {
    const routes = this.routes;
    let bare: CompiledRoute | null = null;
    for (let i = 0; i < routes.length; i++) {
      const r = routes[i];
      if (r.host !== null) {
        if (r.wildcard ? !hostname.endsWith(r.host) : hostname !== r.host) continue;
      }
      const p = r.prefix;
      if (!path.startsWith(p)) {
        if (bare === null && path.length === p.length - 1 && p.charCodeAt(p.length - 1) === 47 && p.startsWith(path) && path.length > 0) bare = r;
        continue;
      }
      if (path.length === p.length || p.charCodeAt(p.length - 1) === 47 || path.charCodeAt(p.length) === 47) {
        if (bare !== null && p.length < path.length) return { route: bare, redirect: true };
        return { route: r, redirect: false };
      }
    }
    return bare === null ? null : { route: bare, redirect: true };
  }
}
