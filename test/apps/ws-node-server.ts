// A Node app the way ws users write one: an http.Server (exported, not
// listening) with a WebSocketServer attached. Echoes every message as it
// came (text stays text, binary stays binary); 'close:<code>:<reason>' makes
// the server close with that code; 'flood:<bytes>' sends that many bytes in
// 64 KiB binary messages, one at a time as the socket takes them (ws's send
// callback: backpressure all the way); GET /stats tells what the app saw, so
// a test can check the close codes and that every socket was closed.
import http from 'node:http';
import { WebSocketServer } from 'ws';

const stats = { floodSent: 0, opened: 0, open: 0, closes: [] as number[], protocols: [] as string[], extensions: [] as string[], headers: [] as Record<string, unknown>[], pings: 0 };

const server = http.createServer((req, res) => {
  if (req.url === '/stats') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(stats));
    return;
  }
  res.statusCode = 404;
  res.end('not found\n');
});

const wss = new WebSocketServer({
  server,
  perMessageDeflate: true,
  maxPayload: 64 * 1024 * 1024,
  handleProtocols: (offered) => (offered.has('chat.v2') ? 'chat.v2' : false),
});

wss.on('connection', (ws, req) => {
  stats.opened++;
  stats.open++;
  stats.protocols.push(ws.protocol);
  stats.extensions.push(ws.extensions);
  stats.headers.push({ origin: req.headers.origin, cookie: req.headers.cookie, authorization: req.headers.authorization, xff: req.headers['x-forwarded-for'], xrid: req.headers['x-request-id'] });
  ws.on('ping', () => {
    stats.pings++;
  });
  ws.on('message', (data, isBinary) => {
    if (!isBinary) {
      const text = data.toString();
      const flood = /^flood:(\d+)$/.exec(text);
      if (flood) {
        const total = Number(flood[1]);
        const chunk = Buffer.alloc(64 * 1024, 0x66);
        const next = (err?: Error) => {
          if (err || stats.floodSent >= total) return;
          stats.floodSent += chunk.length;
          ws.send(chunk, { binary: true }, next);
        };
        next();
        return;
      }
      const m = /^close:(\d+):(.*)$/.exec(text);
      if (m) {
        ws.close(Number(m[1]), m[2]);
        return;
      }
    }
    ws.send(data, { binary: isBinary });
  });
  ws.on('close', (code) => {
    stats.open--;
    stats.closes.push(code);
  });
});

export default server;
