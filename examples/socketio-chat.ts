// A socket.io chat, written exactly as for plain Node: an http.Server with a
// socket.io Server attached, exported instead of listened on. gatewire serve
// delivers the server's 'request' events (the page, socket.io's long-polling
// transport) and its 'upgrade' events (the websocket transport).
//
//   npx gatewire up --app examples/socketio-chat.ts --workers 1    # then open http://127.0.0.1:8080/ in two tabs
//
// One worker: socket.io keeps each client's session in the memory of the
// process that accepted it, so with several workers its polling requests
// must all reach the same one. Several workers need socket.io's Redis
// adapter and websocket-only clients (`transports: ['websocket']`).
//
// Events: 'chat' { name, text } is broadcast to everyone; GET /stats says how
// many clients are connected and how many messages went round.
import http from 'node:http';
import { Server } from 'socket.io';

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>gatewire chat</title></head>
<body>
<ul id="log"></ul>
<form id="f"><input id="name" value="guest" size="8"> <input id="text" autocomplete="off"> <button>Send</button></form>
<script src="/socket.io/socket.io.js"></script>
<script>
  const socket = io();
  const log = document.getElementById('log');
  socket.on('chat', (m) => {
    const li = document.createElement('li');
    li.textContent = m.name + ': ' + m.text;
    log.appendChild(li);
  });
  document.getElementById('f').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = document.getElementById('text');
    socket.emit('chat', { name: document.getElementById('name').value, text: text.value });
    text.value = '';
  });
</script>
</body></html>
`;

let messages = 0;

const server = http.createServer((req, res) => {
  if (req.url === '/stats') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ clients: io.engine.clientsCount, messages }));
    return;
  }
  if (req.url === '/' || req.url === '/index.html') {
    res.setHeader('content-type', 'text/html; charset=utf-8');
    res.end(PAGE);
    return;
  }
  res.statusCode = 404;
  res.end('not found\n');
});

const io = new Server(server);

io.on('connection', (socket) => {
  socket.on('chat', (msg: { name?: unknown; text?: unknown }, ack?: (n: number) => void) => {
    const text = String(msg?.text ?? '').slice(0, 1000);
    if (text === '') return;
    messages++;
    io.emit('chat', { name: String(msg?.name ?? 'guest').slice(0, 40), text });
    if (typeof ack === 'function') ack(messages);
  });
});

export default server;
