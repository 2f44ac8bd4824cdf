// WebSocket client helpers for the tunnel tests (the real `ws` client).
import WebSocket from 'ws';

export function openWs(url: string, protocols: string[] = [], opts: WebSocket.ClientOptions = {}): Promise<WebSocket> {
  const ws = new WebSocket(url, protocols, { perMessageDeflate: false, maxPayload: 64 * 1024 * 1024, ...opts });
  ws.once('upgrade', (res) => {
    (ws as WebSocket & { upgradeHeaders?: unknown }).upgradeHeaders = res.headers;
  });
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`unexpected response ${res.statusCode}`), { statusCode: res.statusCode })));
  });
}

export function nextMessage(ws: WebSocket): Promise<{ data: Buffer; isBinary: boolean }> {
  return new Promise((resolve, reject) => {
    const onClose = (code: number) => reject(new Error(`closed with ${code} while waiting for a message`));
    ws.once('message', (data, isBinary) => {
      ws.off('close', onClose);
      resolve({ data: data as Buffer, isBinary });
    });
    ws.once('close', onClose);
  });
}

export async function eventually(check: () => Promise<boolean> | boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A TestContext stand-in for helpers that register cleanups with t.after, shared by a describe's tests. */
export function suiteContext(): { t: import('node:test').TestContext; close(): Promise<void> } {
  const cleanups: Array<() => unknown> = [];
  return {
    t: { after: (fn: () => unknown) => cleanups.push(fn) } as unknown as import('node:test').TestContext,
    async close() {
      for (const fn of cleanups.reverse()) await fn();
    },
  };
}

