// `gatewire serve` options: command line first, then GATEWIRE_* environment
// variables (for containers), then defaults. Parsed with node:util's
// parseArgs (no hand-written argv parser). Also read by the master: node:util
// without its ES module facade (see supervisor/listen.ts).
import { parseSize as parseSizeValue } from '../protocol/units.ts';
import { DEFAULT_MAX_CONCURRENT_STREAMS } from '../protocol/constants.ts';

const { parseArgs } = process.getBuiltinModule('node:util');

export type AppInterface = 'fetch' | 'node' | 'auto';

export interface ServeOptions {
  app: string;
  /** "unix:/path" or "HOST:PORT"; the default is loopback only (never exposed unless told). */
  listen: string[];
  /** 0 = serve in this process, no master. */
  workers: number;
  /** Recycle a worker after this many requests (0 = never). */
  maxRequests: number;
  /** Seconds: time to the response head before a 504, and event-loop block before a worker is killed (harakiri). */
  timeout: number;
  /** Request body limit in bytes (413 beyond). */
  maxBody: number;
  /** Octal mode applied to Unix socket files (e.g. 660), or null to keep the umask's. */
  chmodSocket: number | null;
  /** Seconds a stopping worker gets to finish its in-flight requests. */
  gracefulTimeout: number;
  /** Seconds between SIGTERM and the graceful stop, serving as usual meanwhile (a preStop sleep built in). */
  drainDelay: number;
  /** CIDRs allowed to connect over TCP; empty = anyone who can reach the address. */
  allowFrom: string[];
  /** HOST:PORT of the JSON stats server, or null. */
  stats: string | null;
  interface: AppInterface;
  /** Native streams accepted per connection. */
  maxStreams: number;
  logLevel: string;
  /** Where to write the bound addresses once listening (a supervisor that asked for port 0 reads the real one), or null. */
  boundFile: string | null;
}

export const SERVE_USAGE = `usage: gatewire serve APP_MODULE [options]

Runs a Fetch handler (default export with fetch(request, info), or a function)
or a Node (req, res) listener such as an Express app. Every listening socket
speaks both the gatewire native protocol and uwsgi classic (NGINX uwsgi_pass,
Apache mod_proxy_uwsgi), detected from the first bytes of each connection.

options (environment variable in brackets):
  --listen ADDR           unix:/path.sock or HOST:PORT; repeatable      [GATEWIRE_LISTEN, comma-separated]
                          default 127.0.0.1:9000 (loopback only)
  --workers N             worker processes; 0 = serve in this process   [GATEWIRE_WORKERS] default 1
  --no-master             same as --workers 0
  --max-requests N        recycle a worker after N requests (0 = never) [GATEWIRE_MAX_REQUESTS] default 0
  --timeout SECONDS       504 when the app has not answered; a worker   [GATEWIRE_TIMEOUT] default 30
                          whose event loop is blocked this long is killed and replaced
  --max-body SIZE         request body limit, e.g. 10m, 1g (413 beyond) [GATEWIRE_MAX_BODY] default 1g
  --graceful-timeout SEC  time to finish in-flight requests on stop     [GATEWIRE_GRACEFUL_TIMEOUT] default 30
  --drain-delay SECONDS   after SIGTERM, keep serving this long before  [GATEWIRE_DRAIN_DELAY] default 0
                          stopping, while the orchestrator removes the endpoint
  --chmod-socket MODE     octal mode of Unix socket files, e.g. 660     [GATEWIRE_CHMOD_SOCKET]
  --allow-from CIDR,...   TCP peers allowed (others logged and closed)  [GATEWIRE_ALLOW_FROM]
  --stats HOST:PORT       JSON stats: per worker pid, requests, in-flight, RSS, restarts [GATEWIRE_STATS]
  --interface fetch|node  app interface (default: detected from the export) [GATEWIRE_INTERFACE]
  --max-streams N         native streams per connection                 [GATEWIRE_MAX_STREAMS] default ${DEFAULT_MAX_CONCURRENT_STREAMS}
  --log-level LEVEL       pino level                                    [GATEWIRE_LOG_LEVEL] default info
  --bound-file PATH       once listening, write the bound addresses to PATH, one per line, with
                          the real port where 0 was asked (for a supervisor that starts the
                          appserver on port 0, as \`gatewire up\` does)  [GATEWIRE_BOUND_FILE]

signals (master): SIGHUP rolling reload of every worker, SIGTERM graceful stop (after
--drain-delay), SIGINT graceful stop; a second SIGTERM/SIGINT kills the workers.`;

export class UsageError extends Error {}

export function parseSize(value: string, what: string): number {
  const bytes = parseSizeValue(value);
  if (Number.isNaN(bytes)) throw new UsageError(`${what}: '${value}' is not a size (e.g. 1048576, 512k, 10m, 1g)`);
  return bytes;
}

function parseNumber(value: string, what: string, min: number): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < min) throw new UsageError(`${what}: '${value}' is not a number >= ${min}`);
  return n;
}

function checkListen(addr: string): string {
  if (addr.startsWith('unix:')) {
    if (addr.length <= 5) throw new UsageError(`--listen ${addr}: empty socket path`);
    return addr;
  }
  const i = addr.lastIndexOf(':');
  const port = Number(addr.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new UsageError(`--listen ${addr}: expected unix:/path.sock or HOST:PORT`);
  }
  return addr;
}

export function parseServeOptions(argv: string[], env: NodeJS.ProcessEnv = process.env): ServeOptions | 'help' {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const v = parsed.values;
  if (v.help) return 'help';
  if (parsed.positionals.length !== 1) throw new UsageError(parsed.positionals.length === 0 ? 'APP_MODULE is required' : `one APP_MODULE expected, got ${parsed.positionals.join(' ')}`);
  const pick = (cli: string | undefined, name: string): string | undefined => cli ?? (env[name] !== undefined && env[name] !== '' ? env[name] : undefined);

  const listenEnv = env.GATEWIRE_LISTEN ? env.GATEWIRE_LISTEN.split(',').map((s) => s.trim()).filter(Boolean) : [];
  const listen = (v.listen && v.listen.length > 0 ? v.listen : listenEnv.length > 0 ? listenEnv : ['127.0.0.1:9000']).map(checkListen);

  const workersRaw = v['no-master'] ? '0' : pick(v.workers, 'GATEWIRE_WORKERS');
  const iface = (pick(v.interface, 'GATEWIRE_INTERFACE') ?? 'auto') as AppInterface;
  if (!['fetch', 'node', 'auto'].includes(iface)) throw new UsageError(`--interface: '${iface}' must be fetch or node`);
  const chmod = pick(v['chmod-socket'], 'GATEWIRE_CHMOD_SOCKET');
  if (chmod !== undefined && !/^[0-7]{3,4}$/.test(chmod)) throw new UsageError(`--chmod-socket: '${chmod}' is not an octal mode such as 660`);
  const allow = pick(v['allow-from'], 'GATEWIRE_ALLOW_FROM');
  return {
    app: parsed.positionals[0],
    listen,
    workers: Math.floor(parseNumber(workersRaw ?? '1', '--workers', 0)),
    maxRequests: Math.floor(parseNumber(pick(v['max-requests'], 'GATEWIRE_MAX_REQUESTS') ?? '0', '--max-requests', 0)),
    timeout: parseNumber(pick(v.timeout, 'GATEWIRE_TIMEOUT') ?? '30', '--timeout', 0.001),
    maxBody: parseSize(pick(v['max-body'], 'GATEWIRE_MAX_BODY') ?? '1g', '--max-body'),
    chmodSocket: chmod === undefined ? null : Number.parseInt(chmod, 8),
    gracefulTimeout: parseNumber(pick(v['graceful-timeout'], 'GATEWIRE_GRACEFUL_TIMEOUT') ?? '30', '--graceful-timeout', 0),
    drainDelay: parseNumber(pick(v['drain-delay'], 'GATEWIRE_DRAIN_DELAY') ?? '0', '--drain-delay', 0),
    allowFrom: allow ? allow.split(',').map((s) => s.trim()).filter(Boolean) : [],
    stats: pick(v.stats, 'GATEWIRE_STATS') ?? null,
    interface: iface,
    maxStreams: Math.floor(parseNumber(pick(v['max-streams'], 'GATEWIRE_MAX_STREAMS') ?? String(DEFAULT_MAX_CONCURRENT_STREAMS), '--max-streams', 1)),
    logLevel: pick(v['log-level'], 'GATEWIRE_LOG_LEVEL') ?? 'info',
    boundFile: pick(v['bound-file'], 'GATEWIRE_BOUND_FILE') ?? null,
  };
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      listen: { type: 'string', multiple: true },
      workers: { type: 'string' },
      'no-master': { type: 'boolean' },
      'max-requests': { type: 'string' },
      timeout: { type: 'string' },
      'max-body': { type: 'string' },
      'graceful-timeout': { type: 'string' },
      'drain-delay': { type: 'string' },
      'chmod-socket': { type: 'string' },
      'allow-from': { type: 'string' },
      stats: { type: 'string' },
      interface: { type: 'string' },
      'max-streams': { type: 'string' },
      'log-level': { type: 'string' },
      'bound-file': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
}
