// The client-facing socket server Fastify runs on (its serverFactory): HTTP/1.1,
// HTTPS or HTTP/2 (with HTTP/1.1 fallback), the limits on heads and idle
// connections, a connection count, and the answer to a client error Node's
// parser raises before any route runs.
import { readFileSync } from 'node:fs';
import http, { type ServerResponse } from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import type net from 'node:net';
import type { ProxyConfig } from './config.ts';
import { STATUS_TEXT } from './errors.ts';

export interface ConnectionCounter {
  opened(): void;
  closed(): void;
}

export function listenerFactory(config: ProxyConfig, connections: ConnectionCounter): (handler: http.RequestListener) => http.Server {
  const limits = config.limits;
  const serverOpts = {
    maxHeaderSize: limits.max_header_size,
    headersTimeout: limits.header_timeout_ms,
    requestTimeout: 0,
    keepAliveTimeout: limits.keepalive_timeout_ms,
    // Node enforces headersTimeout only when this sweep runs (default every 30 s): a
    // header_timeout below that would not be honoured (slowloris held for 30 s).
    connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(limits.header_timeout_ms / 4))),
  };
  const tls = config.listen.tls ? { cert: readFileSync(config.listen.tls.cert), key: readFileSync(config.listen.tls.key) } : null;
  return (handler) => {
    let server: http.Server;
    if (config.listen.http2) {
      server = (
        tls
          ? http2.createSecureServer({ ...tls, allowHTTP1: true, settings: { maxHeaderListSize: limits.max_header_size, enableConnectProtocol: true } }, handler as never)
          : http2.createServer({ settings: { enableConnectProtocol: true } }, handler as never)
      ) as unknown as http.Server;
    } else if (tls) server = https.createServer({ ...serverOpts, ...tls }, handler);
    else server = http.createServer(serverOpts, handler);
    server.keepAliveTimeout = limits.keepalive_timeout_ms;
    server.headersTimeout = limits.header_timeout_ms;
    // Node keeps only the first 2000 raw header entries and drops the rest without a word;
    // max_header_size already bounds the head in bytes (431 past it), so no count limit.
    server.maxHeadersCount = 0;
    if (limits.max_connections > 0) server.maxConnections = limits.max_connections;
    server.on('connection', (sock: net.Socket) => {
      connections.opened();
      sock.once('close', connections.closed);
    });
    return server;
  };
}

const CLIENT_ERROR_STATUS: Record<string, number> = {
  ERR_HTTP_REQUEST_TIMEOUT: 408,
  HPE_HEADER_OVERFLOW: 431,
};

/**
 * Fastify's default answers a client error (bad request line, head over the limit, head not
 * complete within header_timeout) with a JSON body; ours get the same short text as every other
 * error. As Node's own handler does, nothing is written once a response on this connection has
 * started (the bytes would corrupt it); the connection is closed either way.
 */
export function onClientError(err: NodeJS.ErrnoException, socket: net.Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const inFlight = (socket as net.Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
  if (socket.writable && (inFlight == null || !inFlight.headersSent)) {
    const status = CLIENT_ERROR_STATUS[err.code ?? ''] ?? 400;
    const text = STATUS_TEXT[status] ?? http.STATUS_CODES[status] ?? '';
    const body = `${status} ${text}\n`;
    socket.write(`HTTP/1.1 ${status} ${text}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
  }
  socket.destroy();
}
