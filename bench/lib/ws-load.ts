// WebSocket load, run as its own process (so the load's CPU is never the
// measured tiers'): `ws-load.ts echo URL CONNECTIONS SECONDS SIZE` keeps every
// connection busy with one message in flight (closed loop) and prints
// {"messages", "seconds", "p50Ms", "p99Ms", "errors"}; `ws-load.ts idle URL
// COUNT` opens COUNT connections, prints {"held", "errors"} and holds them
// until stdin closes.
import WebSocket from 'ws';

function open(url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

async function echo(url: string, connections: number, seconds: number, size: number): Promise<void> {
  const sockets = await Promise.all(Array.from({ length: connections }, () => open(url)));
  const payload = Buffer.alloc(size, 0x61);
  const rtts: number[] = [];
  let errors = 0;
  let running = true;
  let messages = 0;
  const start = performance.now();
  await Promise.all(
    sockets.map(
      (ws) =>
        new Promise<void>((resolve) => {
          let sentAt = 0;
          const send = () => {
            if (!running) {
              resolve();
              return;
            }
            sentAt = performance.now();
            ws.send(payload);
          };
          ws.on('message', (data: Buffer) => {
            if (data.length !== size) errors++;
            messages++;
            rtts.push(performance.now() - sentAt);
            send();
          });
          ws.on('error', () => {
            errors++;
            resolve();
          });
          ws.on('close', () => resolve());
          send();
        }),
    ).concat(
      new Promise<void>((resolve) =>
        setTimeout(() => {
          running = false;
          resolve();
        }, seconds * 1000),
      ),
    ),
  );
  const elapsed = (performance.now() - start) / 1000;
  for (const ws of sockets) ws.terminate();
  const sorted = Float64Array.from(rtts).sort();
  process.stdout.write(`${JSON.stringify({ messages, seconds: elapsed, p50Ms: percentile(sorted, 0.5), p99Ms: percentile(sorted, 0.99), errors })}\n`);
}

async function idle(url: string, count: number): Promise<void> {
  const held: WebSocket[] = [];
  let errors = 0;
  const BATCH = 200;
  for (let i = 0; i < count; i += BATCH) {
    const batch = await Promise.allSettled(Array.from({ length: Math.min(BATCH, count - i) }, () => open(url)));
    for (const r of batch) {
      if (r.status === 'fulfilled') {
        r.value.on('error', () => {});
        held.push(r.value);
      } else errors++;
    }
  }
  // one round trip on a sample, so every tunnel is known to be established end to end
  await Promise.all(
    held.slice(0, 50).map(
      (ws) =>
        new Promise<void>((resolve) => {
          ws.once('message', () => resolve());
          ws.send('x');
        }),
    ),
  );
  process.stdout.write(`${JSON.stringify({ held: held.length, errors })}\n`);
  process.stdin.resume();
  process.stdin.once('end', () => {
    for (const ws of held) ws.terminate();
    process.exit(0);
  });
}

const [mode, url, a, b, c] = process.argv.slice(2);
if (mode === 'echo') await echo(url, Number(a), Number(b), Number(c));
else if (mode === 'idle') await idle(url, Number(a));
else {
  process.stderr.write('usage: ws-load.ts echo URL CONNECTIONS SECONDS SIZE | idle URL COUNT\n');
  process.exit(2);
}
