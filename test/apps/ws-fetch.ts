// A Fetch app using info.upgradeWebSocket (Deno's shape): echoes messages
// (binaryType 'arraybuffer'), accepts the subprotocol 'chat.v2' when offered,
// sets a cookie on the 101, closes with 'close:<code>:<reason>', and reports
// what it saw at GET /stats. GET /page is a page whose script opens a
// WebSocket back to the same origin, exchanges messages and POSTs what it got
// to /report (a browser test reads it back with GET /report).
import type { ServeInfo } from '../../appserver/app.ts';

const stats = { opened: 0, open: 0, closes: [] as number[], protocols: [] as string[] };
let report: unknown = null;

const PAGE = `<!doctype html><meta charset="utf-8"><title>ws test</title><body><pre id="out">running</pre><script>
(async () => {
  const result = { steps: [] };
  try {
    const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws', ['chat.v2']);
    ws.binaryType = 'arraybuffer';
    const next = () => new Promise((resolve, reject) => { ws.onmessage = (e) => resolve(e.data); ws.onclose = (e) => reject(new Error('closed ' + e.code)); });
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error('websocket error')); });
    result.protocol = ws.protocol;
    result.extensions = ws.extensions;
    ws.send('hello from the browser');
    result.steps.push(await next());
    const bytes = new Uint8Array(100000).map((_, i) => i % 251);
    ws.send(bytes);
    const back = new Uint8Array(await next());
    result.steps.push(back.length === bytes.length && back.every((b, i) => b === bytes[i]) ? 'binary ok' : 'binary mismatch');
    const closed = new Promise((resolve) => { ws.onclose = (e) => resolve(e); });
    ws.send('close:4321:done');
    const ev = await closed;
    result.close = { code: ev.code, reason: ev.reason };
    result.cookie = document.cookie;
  } catch (err) {
    result.error = String(err);
  }
  document.getElementById('out').textContent = JSON.stringify(result);
  await fetch('/report', { method: 'POST', body: JSON.stringify(result) });
})();
</script>`;

export default {
  fetch(request: Request, info: ServeInfo): Response | Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname === '/stats') return Response.json(stats);
    if (url.pathname === '/page') return new Response(PAGE, { headers: { 'content-type': 'text/html; charset=utf-8' } });
    if (url.pathname === '/report') {
      if (request.method === 'POST') {
        return request.json().then((r: unknown) => {
          report = r;
          return new Response('ok\n');
        });
      }
      return Response.json(report);
    }
    if (request.headers.get('upgrade')?.toLowerCase() !== 'websocket') return new Response('not a websocket request\n', { status: 426 });
    const offered = (request.headers.get('sec-websocket-protocol') ?? '').split(',').map((s) => s.trim());
    const { socket, response } = info.upgradeWebSocket(request, { protocol: offered.includes('chat.v2') ? 'chat.v2' : undefined });
    response.headers.set('set-cookie', 'ws=1; Path=/');
    socket.binaryType = 'arraybuffer';
    socket.onopen = () => {
      stats.opened++;
      stats.open++;
      stats.protocols.push(socket.protocol);
    };
    socket.onmessage = (ev: MessageEvent) => {
      if (typeof ev.data === 'string') {
        const m = /^close:(\d+):(.*)$/.exec(ev.data);
        if (m) {
          socket.close(Number(m[1]), m[2]);
          return;
        }
      }
      socket.send(ev.data);
    };
    socket.addEventListener('close', (ev) => {
      stats.open--;
      stats.closes.push((ev as CloseEvent).code);
    });
    return response;
  },
};
