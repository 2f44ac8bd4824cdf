// Container health probe (Dockerfile HEALTHCHECK, compose and Kubernetes exec
// probes). Exits 0 when the target answers 2xx/3xx within the timeout, 1 otherwise.
//
//   node dist/deploy/healthcheck.js                         # $GATEWIRE_HEALTHCHECK_URL or the proxy admin /healthz
//   node dist/deploy/healthcheck.js http://127.0.0.1:9901/healthz
//   node dist/deploy/healthcheck.js uwsgi 127.0.0.1:9000 /  # an appserver (or a real uWSGI): one uwsgi request
//   node dist/deploy/healthcheck.js uwsgi unix:/run/gatewire/app.sock /
//
// The uwsgi form sends the same packet NGINX's uwsgi_pass sends, so it proves
// the appserver decodes a request and the app answers, not only that a port is open.
// Plain JS runtime only (no tsx): it is compiled to dist/ with the rest.
import net from 'node:net';
import { UWSGI_HEADER_SIZE, UWSGI_MODIFIER1_WSGI } from '../protocol/constants.ts';
import { encodeVars } from '../protocol/vars.ts';

const TIMEOUT_MS = Number(process.env.GATEWIRE_HEALTHCHECK_TIMEOUT_MS ?? 5000);
const DEFAULT_URL = process.env.GATEWIRE_HEALTHCHECK_URL ?? 'http://127.0.0.1:9901/healthz';

async function probeHttp(url: string): Promise<number> {
  const res = await fetch(url, { signal: AbortSignal.timeout(TIMEOUT_MS), redirect: 'manual' });
  await res.body?.cancel();
  return res.status;
}

/** Builds one uwsgi classic request packet for GET `target`. */
function uwsgiRequest(target: string, host = 'localhost'): Buffer {
  const q = target.indexOf('?');
  const vars = [
    'REQUEST_METHOD', 'GET',
    'REQUEST_URI', target,
    'PATH_INFO', q < 0 ? target : target.slice(0, q),
    'QUERY_STRING', q < 0 ? '' : target.slice(q + 1),
    'SERVER_PROTOCOL', 'HTTP/1.1',
    'REQUEST_SCHEME', 'http',
    'SERVER_NAME', host,
    'SERVER_PORT', '80',
    'REMOTE_ADDR', '127.0.0.1',
    'REMOTE_PORT', '0',
    'HTTP_HOST', host,
    'HTTP_USER_AGENT', 'gatewire-healthcheck',
  ];
  const block = encodeVars(vars);
  if (block instanceof Error) throw block;
  const head = Buffer.alloc(UWSGI_HEADER_SIZE);
  head[0] = UWSGI_MODIFIER1_WSGI;
  head.writeUInt16LE(block.length, 1);
  head[3] = 0;
  return Buffer.concat([head, block]);
}

/** Sends one uwsgi request and resolves with the status of the response line ("HTTP/1.1 200 OK" or CGI "Status: 200"). */
function probeUwsgi(address: string, target: string): Promise<number> {
  return new Promise((resolve, reject) => {
    let sock: net.Socket;
    if (address.startsWith('unix:')) sock = net.connect(address.slice(5));
    else {
      const i = address.lastIndexOf(':');
      sock = net.connect(Number(address.slice(i + 1)), address.slice(0, i).replace(/^\[|\]$/g, ''));
    }
    const timer = setTimeout(() => sock.destroy(new Error(`no answer within ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
    let head = '';
    sock.on('connect', () => sock.write(uwsgiRequest(target)));
    sock.on('data', (chunk: Buffer) => {
      head += chunk.toString('latin1');
      const eol = head.indexOf('\n');
      if (eol < 0 && head.length < 1024) return;
      const m = /^(?:HTTP\/\d\.\d|Status:)\s+(\d{3})/.exec(head);
      clearTimeout(timer);
      sock.destroy();
      if (m) resolve(Number(m[1]));
      else reject(new Error(`not a uwsgi response: ${JSON.stringify(head.slice(0, 80))}`));
    });
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      reject(new Error('connection closed before a response line'));
    });
  });
}

async function main(argv: string[]): Promise<number> {
  try {
    const status = argv[0] === 'uwsgi' ? await probeUwsgi(argv[1] ?? '127.0.0.1:9000', argv[2] ?? '/') : await probeHttp(argv[0] ?? DEFAULT_URL);
    if (status >= 200 && status < 400) return 0;
    process.stderr.write(`unhealthy: status ${status}\n`);
    return 1;
  } catch (err) {
    process.stderr.write(`unhealthy: ${(err as Error).message}\n`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
