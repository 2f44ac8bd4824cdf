// Clients for the appserver tests: a raw uwsgi classic client (what NGINX
// sends), a native gatewire client over GatewireSession, and a launcher that
// waits for `gatewire serve` to say it is listening.
import net from 'node:net';
import { HttpResponseParser } from '../../protocol/http-response.ts';
import { GatewireSession, type GatewireStream } from '../../protocol/session.ts';
import { encodeUwsgiRequest } from '../../protocol/uwsgi.ts';
import type { Vars } from '../../protocol/vars.ts';
import { type Proc, startGatewire } from './procs.ts';

export function connectTo(address: string): net.Socket {
  if (address.startsWith('unix:')) return net.connect(address.slice(5));
  const i = address.lastIndexOf(':');
  return net.connect(Number(address.slice(i + 1)), address.slice(0, i));
}

export interface HttpResult {
  status: number;
  /** Flat raw headers as sent (names as the server wrote them). */
  rawHeaders: string[];
  body: Buffer;
}

export function header(res: { rawHeaders: string[] }, name: string): string | undefined {
  for (let i = 0; i < res.rawHeaders.length; i += 2) if (res.rawHeaders[i].toLowerCase() === name) return res.rawHeaders[i + 1];
  return undefined;
}

export function headerAll(raw: string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if (raw[i].toLowerCase() === name) out.push(raw[i + 1]);
  return out;
}

/** The vars NGINX's uwsgi_params would send for a simple request. */
export function requestVars(method: string, uri: string, headers: Array<[string, string]> = [], contentLength = ''): Vars {
  const q = uri.indexOf('?');
  const vars: Vars = [
    'QUERY_STRING',
    q < 0 ? '' : uri.slice(q + 1),
    'REQUEST_METHOD',
    method,
    'CONTENT_TYPE',
    '',
    'CONTENT_LENGTH',
    contentLength,
    'REQUEST_URI',
    uri,
    'PATH_INFO',
    q < 0 ? uri : uri.slice(0, q),
    'SERVER_PROTOCOL',
    'HTTP/1.1',
    'REQUEST_SCHEME',
    'http',
    'REMOTE_ADDR',
    '127.0.0.1',
    'REMOTE_PORT',
    '40000',
    'SERVER_PORT',
    '80',
    'SERVER_NAME',
    'localhost',
    'HTTP_HOST',
    'localhost',
  ];
  for (const [k, v] of headers) vars.push(`HTTP_${k.toUpperCase().replaceAll('-', '_')}`, v);
  return vars;
}

/** One uwsgi classic request; resolves when the server closes the connection. */
export function uwsgiRequest(address: string, vars: Vars, body?: Buffer, opts: { timeoutMs?: number; isHead?: boolean } = {}): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const packet = encodeUwsgiRequest(vars);
    if (!(packet instanceof Buffer)) return reject(packet);
    const sock = connectTo(address);
    const chunks: Buffer[] = [];
    let status = 0;
    let rawHeaders: string[] = [];
    const parser = new HttpResponseParser(
      {
        onHead(s, _r, raw) {
          status = s;
          rawHeaders = raw;
        },
        onBody(c) {
          chunks.push(Buffer.from(c));
        },
        onEnd() {},
      },
      { isHead: opts.isHead ?? vars[vars.indexOf('REQUEST_METHOD') + 1] === 'HEAD', maxHeaderSize: 64 * 1024 },
    );
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`uwsgi request timed out after ${opts.timeoutMs ?? 20000} ms`));
    }, opts.timeoutMs ?? 20000);
    sock.on('data', (d) => {
      const err = parser.push(d);
      if (err) {
        sock.destroy();
        clearTimeout(timer);
        reject(err);
      }
    });
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      const err = parser.finish();
      if (err) reject(err);
      else resolve({ status, rawHeaders, body: Buffer.concat(chunks) });
    });
    sock.write(packet);
    if (body) sock.write(body);
  });
}

/** A native client session (role client) on `address`. */
export function nativeSession(address: string): Promise<GatewireSession> {
  return new Promise((resolve, reject) => {
    const sock = connectTo(address);
    sock.once('connect', () => {
      sock.off('error', reject);
      const session = new GatewireSession(sock, { role: 'client' });
      session.on('error', () => {});
      resolve(session);
    });
    sock.once('error', reject);
  });
}

export interface NativeResult {
  status: number;
  headers: Vars;
  body: Buffer;
}

/** Sends one request on a native session and collects the whole response. */
export function nativeRequest(session: GatewireSession, vars: Vars, body?: Buffer | null, timeoutMs = 20000): Promise<NativeResult> {
  return new Promise((resolve, reject) => {
    const stream = session.request(vars, { endStream: !body });
    collect(stream, timeoutMs).then(resolve, reject);
    if (body) stream.end(body);
  });
}

export function collect(stream: GatewireStream, timeoutMs = 20000): Promise<NativeResult> {
  return new Promise((resolve, reject) => {
    let status = 0;
    let headers: Vars = [];
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      stream.destroy();
      reject(new Error(`native request timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    stream.on('response', (s: number, h: Vars) => {
      status = s;
      headers = h;
    });
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      clearTimeout(timer);
      resolve({ status, headers, body: Buffer.concat(chunks) });
    });
    stream.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

export function varsHeader(headers: Vars, name: string): string | undefined {
  for (let i = 0; i < headers.length; i += 2) if (headers[i] === name) return headers[i + 1];
  return undefined;
}

/** `gatewire serve ...` started and listening (the "listening on" line printed). */
export async function startServe(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Proc> {
  const proc = startGatewire(['serve', ...args], { env: { ...process.env, ...env } });
  try {
    await proc.waitFor(/gatewire serve: listening on /, 30000);
  } catch (err) {
    proc.kill('SIGKILL');
    throw err;
  }
  return proc;
}
