// docker-compose (Debian's 1.29) on the test's own engine: a project of the
// repository's compose files plus an override that only builds with the host's
// network (the engine has no bridge of its own to the outside), published on a
// free 127.0.0.1 port; the proxy's per-replica counts read from its admin
// /status inside the proxy container; and a steady load from the host with every
// answer counted.
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { Agent, request } from 'undici';
import type { Engine } from './deploy-engine.ts';
import { ROOT } from './procs.ts';
import { requireTool } from './tools.ts';

const run = promisify(execFile);

export class ComposeProject {
  readonly name: string;
  readonly port: number;
  private readonly engine: Engine;
  private readonly files: string[];

  constructor(engine: Engine, name: string, files: string[], port: number) {
    this.engine = engine;
    this.name = name;
    this.port = port;
    const override = path.join(engine.dir, `${name}.override.yml`);
    // Absolute contexts: the override sits outside the project directory.
    writeFileSync(
      override,
      [
        'services:',
        ...['proxy', 'appserver'].flatMap((s) => [`  ${s}:`, `    build: { context: ${ROOT}, network: host }`]),
        '  flask:',
        `    build: { context: ${path.join(ROOT, 'deploy/flask')}, network: host }`,
        '',
      ].join('\n'),
    );
    this.files = [...files.map((f) => path.join(ROOT, f)), override];
  }

  get base(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** `docker-compose -p NAME -f FILE... ARGS`; rejects with compose's output on failure. */
  async compose(args: string[], timeoutMs = 300_000): Promise<string> {
    const bin = requireTool('docker-compose');
    const env = { ...this.engine.env, GATEWIRE_PUBLISH: `127.0.0.1:${this.port}` };
    try {
      const r = await run(bin, ['-p', this.name, '--project-directory', ROOT, ...this.files.flatMap((f) => ['-f', f]), ...args], {
        cwd: ROOT,
        env,
        timeout: timeoutMs,
        maxBuffer: 64 << 20,
      });
      return r.stdout + r.stderr;
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; message: string };
      throw new Error(`docker-compose ${args.join(' ')} failed: ${e.message}\n${(e.stdout ?? '').slice(-3000)}\n${(e.stderr ?? '').slice(-3000)}`);
    }
  }

  /** Container ids of a service (running or not), oldest first by compose's number. */
  async containers(service: string, all = false): Promise<string[]> {
    const out = await this.engine.docker([
      'ps',
      ...(all ? ['-a'] : []),
      '--filter', `label=com.docker.compose.project=${this.name}`,
      '--filter', `label=com.docker.compose.service=${service}`,
      '--format', '{{.Label "com.docker.compose.container-number"}} {{.ID}}',
    ]);
    return out
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split(' '))
      .sort((a, b) => Number(a[0]) - Number(b[0]))
      .map((p) => p[1]);
  }

  async inspect(id: string, format: string): Promise<string> {
    return (await this.engine.docker(['inspect', '-f', format, id])).trim();
  }

  /** Address of each running replica of `service` on the compose network → its container name. */
  async replicaAddresses(service: string): Promise<Map<string, string>> {
    const map = new Map<string, string>();
    for (const id of await this.containers(service)) {
      const ip = await this.inspect(id, '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}');
      map.set(ip, (await this.inspect(id, '{{.Name}}')).replace(/^\//, ''));
    }
    return map;
  }

  /** Waits (bounded) until the service's containers all report healthy. */
  async waitHealthy(service: string, count: number, timeoutMs = 180_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let states: string[] = [];
    for (;;) {
      const ids = await this.containers(service);
      states = await Promise.all(ids.map((id) => this.inspect(id, '{{.State.Health.Status}}')));
      if (ids.length === count && states.every((s) => s === 'healthy')) return;
      if (Date.now() > deadline) {
        const logs = await this.compose(['logs', '--tail', '30', service]).catch((e: Error) => e.message);
        throw new Error(`${service}: ${count} healthy containers expected within ${timeoutMs / 1000} s, got [${states.join(', ')}]\n${logs}`);
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  }

  /** `docker logs` of a container: its stdout and stderr (gatewire logs to stderr). */
  async logs(id: string): Promise<string> {
    const r = await run('docker', ['logs', id], { env: this.engine.env, timeout: 30_000, maxBuffer: 64 << 20 });
    return r.stdout + r.stderr;
  }

  /** Requests handed to each host of proxy upstream `upstream`, from the proxy's admin /status (inside its container). */
  async upstreamCounts(upstream: string): Promise<Record<string, number>> {
    const [proxy] = await this.containers('proxy');
    const script = `fetch("http://127.0.0.1:9901/status").then(r=>r.json()).then(s=>{const u=s.upstreams.find(x=>x.name===${JSON.stringify(upstream)});console.log(JSON.stringify(Object.fromEntries(u.hosts.map(h=>[h.address,h.requests]))))})`;
    return JSON.parse(await this.engine.docker(['exec', proxy, 'node', '-e', script], 30_000));
  }
}

/** Per-host request deltas between two upstreamCounts() readings, keyed by address without the port. */
export function countDeltas(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [addr, n] of Object.entries(after)) out[addr.replace(/:\d+$/, '')] = n - (before[addr] ?? 0);
  return out;
}

export interface LoadCounts {
  requests: number;
  /** status code → count; "error: CODE" for a request that got no response. */
  byStatus: Record<string, number>;
  failures: number;
  /** The first few failures: status, x-request-id and the start of the body, or the error. */
  samples: string[];
  ms: number;
}

/**
 * A steady load on `url` from the host (GET, and POST /echo-length): `concurrency` loops over keep-alive connections, each request
 * bounded to 20 s, the whole run by `maxMs`. stop() ends it and returns what every request got.
 */
export function startLoad(url: string, concurrency = 8, maxMs = 180_000): { stop(): Promise<LoadCounts> } {
  const agent = new Agent({ connections: concurrency, keepAliveTimeout: 4000, headersTimeout: 20_000, bodyTimeout: 20_000 });
  const counts: LoadCounts = { requests: 0, byStatus: {}, failures: 0, samples: [], ms: 0 };
  const started = performance.now();
  let running = true;
  const note = (key: string, ok: boolean, sample: () => string) => {
    counts.requests++;
    counts.byStatus[key] = (counts.byStatus[key] ?? 0) + 1;
    if (ok) return;
    counts.failures++;
    if (counts.samples.length < 5) counts.samples.push(`${new Date().toISOString()} ${sample()}`);
  };
  // One loop in four POSTs a small body (not idempotent: a proxy may retry it only where the server provably never saw it).
  const postBody = Buffer.alloc(1024, 'p');
  const loop = async (_: unknown, i: number) => {
    const method = i % 4 === 3 ? 'POST' : 'GET';
    const target = method === 'POST' ? new URL('/echo-length', url).href : url;
    while (running && performance.now() - started < maxMs) {
      try {
        const res = await request(target, { method, body: method === 'POST' ? postBody : undefined, dispatcher: agent, signal: AbortSignal.timeout(20_000) });
        const body = await res.body.text();
        const ok = res.statusCode >= 200 && res.statusCode < 300;
        note(`${method} ${res.statusCode}`, ok, () => `${method} ${res.statusCode} x-request-id=${res.headers['x-request-id']} ${JSON.stringify(body.slice(0, 200))}`);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
        note(`${method} error: ${code}`, false, () => `${method} error ${code}`);
      }
    }
  };
  const loops = Array.from({ length: concurrency }, loop);
  let stopped: Promise<LoadCounts> | null = null;
  const stop = async () => {
    running = false;
    await Promise.all(loops);
    counts.ms = Math.round(performance.now() - started);
    await agent.close();
    return counts;
  };
  return { stop: () => (stopped ??= stop()) };
}

export function describeLoad(c: LoadCounts): string {
  const statuses = Object.entries(c.byStatus)
    .map(([k, n]) => `${n} × ${k}`)
    .join(', ');
  return `${c.requests} requests in ${(c.ms / 1000).toFixed(1)} s (${statuses}); non-2xx or failed: ${c.failures}`;
}
