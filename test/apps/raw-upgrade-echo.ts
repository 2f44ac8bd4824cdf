// Not WebSocket: an http.Server whose 'upgrade' handler accepts the token
// 'x-echo' and then echoes raw bytes, ending its side when the client ends
// its own (half-close per direction). Any other token gets a 400.
import http from 'node:http';
import type { Duplex } from 'node:stream';

const server = http.createServer((_req, res) => res.end('plain\n'));
server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
  if (req.headers.upgrade !== 'x-echo') {
    socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 12\r\nConnection: close\r\n\r\nbad upgrade\n');
    return;
  }
  socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-echo\r\nConnection: Upgrade\r\n\r\n');
  if (head.length > 0) socket.write(head);
  socket.on('data', (d: Buffer) => socket.write(d));
  socket.on('end', () => socket.end('bye\n'));
  socket.on('error', () => {});
});

export default server;
