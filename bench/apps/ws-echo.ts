// The WebSocket bench app: a ws WebSocketServer on an http.Server that echoes
// every message. Exported without listening for `gatewire serve`; listened on
// by bench/apps/ws-echo-standalone.ts for NGINX and for the server alone.
import http from 'node:http';
import { WebSocketServer } from 'ws';

const server = http.createServer((_req, res) => {
  res.end('ws echo\n');
});
const wss = new WebSocketServer({ server, clientTracking: false });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => {});
});

export default server;
