// A real NGINX (Debian's) in front of the appserver: temp prefix, free ports,
// `daemon off`, errors on stderr. And a raw HTTP/1.1 client so the tests
// control every byte (repeated headers, chunked uploads, HEAD).
import { mkdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { HttpResponseParser } from '../../protocol/http-response.ts';
import { freePort, waitForListen } from './net.ts';
import { type Proc, startProcess } from './procs.ts';
import { requireTool } from './tools.ts';

// Debian's /etc/nginx/uwsgi_params, inlined so the test does not depend on /etc.
const UWSGI_PARAMS = `
uwsgi_param  QUERY_STRING       $query_string;
uwsgi_param  REQUEST_METHOD     $request_method;
uwsgi_param  CONTENT_TYPE       $content_type;
uwsgi_param  CONTENT_LENGTH     $content_length;
uwsgi_param  REQUEST_URI        $request_uri;
uwsgi_param  PATH_INFO          $document_uri;
uwsgi_param  DOCUMENT_ROOT      $document_root;
uwsgi_param  SERVER_PROTOCOL    $server_protocol;
uwsgi_param  REQUEST_SCHEME     $scheme;
uwsgi_param  HTTPS              $https if_not_empty;
uwsgi_param  REMOTE_ADDR        $remote_addr;
uwsgi_param  REMOTE_PORT        $remote_port;
uwsgi_param  SERVER_PORT        $server_port;
uwsgi_param  SERVER_NAME        $server_name;
`;

export interface Nginx {
  proc: Proc;
  /** One port per upstream, in the order given. */
  ports: number[];
  stop(): Promise<void>;
}

/** NGINX with one server block per upstream ("unix:/path" or "127.0.0.1:port"), each `uwsgi_pass`ing everything. */
export async function startNginx(dir: string, upstreams: string[]): Promise<Nginx> {
  const bin = requireTool('nginx');
  const ports: number[] = [];
  for (const _ of upstreams) ports.push(await freePort());
  mkdirSync(path.join(dir, 'tmp'), { recursive: true });
  writeFileSync(path.join(dir, 'uwsgi_params'), UWSGI_PARAMS);
  const servers = upstreams
    .map(
      (u, i) => `
    server {
      listen 127.0.0.1:${ports[i]};
      server_name localhost;
      location / {
        include uwsgi_params;
        uwsgi_pass ${u};
        uwsgi_read_timeout 60s;
      }
    }`,
    )
    .join('\n');
  const conf = `
worker_processes 1;
pid ${path.join(dir, 'nginx.pid')};
error_log stderr notice;
${process.getuid?.() === 0 ? 'user root;' : ''}
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/tmp/body;
  proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi;
  scgi_temp_path ${dir}/tmp/scgi;
  client_max_body_size 512m;
  ${servers}
}
`;
  const confPath = path.join(dir, 'nginx.conf');
  writeFileSync(confPath, conf);
  const proc = startProcess(bin, ['-e', 'stderr', '-p', dir, '-c', confPath, '-g', 'daemon off;']);
  try {
    for (const p of ports) await waitForListen(`127.0.0.1:${p}`, 15000);
  } catch (err) {
    proc.kill('SIGKILL');
    throw new Error(`nginx did not start: ${(err as Error).message}\n${proc.output()}`);
  }
  return {
    proc,
    ports,
    async stop() {
      // SIGQUIT is NGINX's graceful stop; stop() escalates to SIGKILL.
      proc.kill('SIGQUIT');
      await Promise.race([proc.exited, new Promise((r) => setTimeout(r, 5000))]);
      await proc.stop(2000);
    },
  };
}

export interface RawHttpResponse {
  status: number;
  rawHeaders: string[];
  body: Buffer;
  /** ms from sending the request to the first body byte, and to the end. */
  firstByteMs: number;
  endMs: number;
}

/**
 * Sends `head` (the complete request head, final empty line included) and
 * optional body chunks, and reads one response until it ends or the server
 * closes the connection.
 */
export function rawHttp(port: number, head: string, bodyChunks: Buffer[] = [], opts: { isHead?: boolean; timeoutMs?: number } = {}): Promise<RawHttpResponse> {
  return new Promise((resolve, reject) => {
    const start = Date.now();
    let firstByteMs = -1;
    const sock = net.connect(port, '127.0.0.1');
    let status = 0;
    let rawHeaders: string[] = [];
    const chunks: Buffer[] = [];
    let settled = false;
    const finish = (err: Error | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve({ status, rawHeaders, body: Buffer.concat(chunks), firstByteMs, endMs: Date.now() - start });
    };
    const parser = new HttpResponseParser(
      {
        onHead(s, _reason, raw) {
          status = s;
          rawHeaders = raw;
        },
        onBody(c) {
          if (firstByteMs < 0) firstByteMs = Date.now() - start;
          chunks.push(Buffer.from(c));
        },
        onEnd() {
          finish(null);
        },
      },
      { isHead: opts.isHead, maxHeaderSize: 64 * 1024 },
    );
    const timer = setTimeout(() => finish(new Error(`HTTP request timed out after ${opts.timeoutMs ?? 30000} ms`)), opts.timeoutMs ?? 30000);
    sock.on('data', (d) => {
      const err = parser.push(d);
      if (err) finish(err);
    });
    sock.on('error', (err) => finish(err));
    sock.on('close', () => finish(parser.finish()));
    sock.on('connect', async () => {
      sock.write(head, 'latin1');
      for (const c of bodyChunks) {
        if (!sock.write(c)) await new Promise((r) => sock.once('drain', r));
      }
    });
  });
}

export function rawHeader(raw: string[], name: string): string | undefined {
  for (let i = 0; i < raw.length; i += 2) if (raw[i].toLowerCase() === name) return raw[i + 1];
  return undefined;
}
