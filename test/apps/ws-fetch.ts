// A Fetch app using info.upgradeWebSocket (Deno's shape): echoes messages
// (binaryType 'arraybuffer'), accepts the subprotocol 'chat.v2' when offered,
// sets a cookie on the 101, closes with 'close:<code>:<reason>', and reports
// what it saw at GET /stats.
import type { ServeInfo } from '../../appserver/app.ts';

const stats = { opened: 0, open: 0, closes: [] as number[], protocols: [] as string[] };

export default {
  fetch(request: Request, info: ServeInfo): Response {
    const url = new URL(request.url);
    if (url.pathname === '/stats') return Response.json(stats);
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
