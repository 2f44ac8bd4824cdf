// A minimal HTTP/1.1 → native gateway for the appserver tests, so real
// WebSocket and socket.io clients can talk to `gatewire serve` without the
// proxy in between (the proxy has its own tests): each upgrade request becomes
// one native upgrade stream, each plain request one native request, all on a
// single native connection.
import { once } from 'node:events';
import http from 'node:http';
import type net from 'node:net';
import type { GatewireSession, GatewireStream } from '../../protocol/session.ts';
import type { Vars } from '../../protocol/vars.ts';
import { nativeSession } from './appserver-clients.ts';

export interface NativeGateway {
  url: string;
  session: GatewireSession;
  /** Client sockets currently open (upgraded or not). */
  sockets: Set<net.Socket>;
  close(): Promise<void>;
}

function varsOf(req: http.IncomingMessage): Vars {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  const vars: Vars = [
    'REQUEST_METHOD',
    req.method ?? 'GET',
    'REQUEST_URI',
    url,
    'PATH_INFO',
    q < 0 ? url : url.slice(0, q),
    'QUERY_STRING',
    q < 0 ? '' : url.slice(q + 1),
    'SERVER_PROTOCOL',
    'HTTP/1.1',
    'REMOTE_ADDR',
    req.socket.remoteAddress ?? '',
    'REMOTE_PORT',
    String(req.socket.remotePort ?? 0),
    'CONTENT_LENGTH',
    req.headers['content-length'] ?? '',
  ];
  for (let i = 0; i < req.rawHeaders.length; i += 2) vars.push(`HTTP_${req.rawHeaders[i].toUpperCase().replaceAll('-', '_')}`, req.rawHeaders[i + 1]);
  return vars;
}

function headLines(status: number, headers: Vars): string {
  let head = `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\n`;
  for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
  return `${head}\r\n`;
}

function tunnel(socket: net.Socket, stream: GatewireStream): void {
  socket.on('data', (c: Buffer) => {
    if (!stream.write(c)) socket.pause();
  });
  stream.on('drain', () => socket.resume());
  socket.on('end', () => stream.end());
  stream.on('data', (c: Buffer) => {
    if (!socket.write(c)) stream.pause();
  });
  socket.on('drain', () => stream.resume());
  stream.on('end', () => socket.end());
  socket.on('close', () => {
    if (!stream.closed) stream.destroy();
  });
  stream.on('close', () => {
    if (stream.resetError) socket.destroy();
  });
}

export async function startNativeGateway(appAddress: string): Promise<NativeGateway> {
  const session = await nativeSession(appAddress);
  const sockets = new Set<net.Socket>();
  const server = http.createServer((req, res) => {
    const stream = session.request(varsOf(req), { endStream: req.headers['content-length'] === undefined && req.headers['transfer-encoding'] === undefined });
    stream.on('error', () => res.destroy());
    stream.once('response', (status: number, headers: Vars) => {
      for (let i = 0; i < headers.length; i += 2) if (headers[i] !== 'transfer-encoding' && headers[i] !== 'connection') res.appendHeader(headers[i], headers[i + 1]);
      res.writeHead(status);
      stream.pipe(res);
    });
    if (!stream.writableEnded) req.pipe(stream);
  });
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    socket.on('error', () => {});
    const stream = session.request(varsOf(req), { upgrade: true });
    stream.on('error', () => socket.destroy());
    stream.once('response', (status: number, headers: Vars) => {
      socket.write(headLines(status, headers));
      if (status !== 101) {
        stream.pipe(socket);
        stream.end();
        return;
      }
      if (head.length > 0) stream.write(head);
      tunnel(socket, stream);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    session,
    sockets,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      session.destroy();
    },
  };
}
