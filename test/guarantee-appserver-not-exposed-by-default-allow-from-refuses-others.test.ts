// The appserver socket is never exposed by default: without --listen it binds
// 127.0.0.1 only (another loopback address such as 127.0.0.2 is refused, as
// any non-local interface would be); and --allow-from CIDR,... restricts TCP
// peers like gunicorn's --uwsgi-allow-from: a peer outside the list is logged
// and closed without an answer, in the in-process server and in workers alike.
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { freePort } from './helpers/net.ts';
import { requestVars, uwsgiRequest } from './helpers/appserver-clients.ts';
import { encodeUwsgiRequest } from '../protocol/uwsgi.ts';
import { startApp } from './helpers/guarantee-stack.ts';

/** Connects from `localAddress`, sends a uwsgi request, and reports what happened. */
function tryFrom(localAddress: string, host: string, port: number): Promise<{ connected: boolean; answer: string; error?: string }> {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port, localAddress });
    let connected = false;
    let answer = '';
    const timer = setTimeout(() => {
      sock.destroy();
      resolve({ connected, answer, error: 'timeout' });
    }, 10000);
    sock.once('connect', () => {
      connected = true;
      const pkt = encodeUwsgiRequest(requestVars('GET', '/hello'));
      if (pkt instanceof Buffer) sock.write(pkt);
    });
    sock.on('data', (d) => {
      answer += d.toString('latin1');
    });
    sock.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve({ connected, answer, error: err.code });
    });
    sock.once('close', () => {
      clearTimeout(timer);
      resolve({ connected, answer });
    });
  });
}

test('without --listen the appserver binds 127.0.0.1:9000 only', { timeout: 60000 }, async (t) => {
  const app = await startApp(t, 'A', { noListen: true, address: '127.0.0.1:9000' });
  assert.match(app.proc.output(), /listening on 127\.0\.0\.1:9000\b/);
  const local = await tryFrom('127.0.0.1', '127.0.0.1', 9000);
  assert.match(local.answer, /hello from A$/, JSON.stringify(local));
  // a wildcard bind (0.0.0.0) would accept on every local address; 127.0.0.1 alone does not
  const other = await tryFrom('127.0.0.1', '127.0.0.2', 9000);
  assert.equal(other.connected, false, 'nothing listens on 127.0.0.2:9000');
  assert.equal(other.error, 'ECONNREFUSED');
});

for (const workers of [0, 1]) {
  test(`--allow-from 127.0.0.1/32 (${workers === 0 ? 'in-process' : 'one worker'}): a peer from 127.0.0.2 is logged and closed unanswered, 127.0.0.1 is served`, { timeout: 60000 }, async (t) => {
    const port = await freePort();
    // a loopback listener accepts peers with any 127.x source: only --allow-from stands between 127.0.0.2 and the app
    const app = await startApp(t, 'A', { address: `127.0.0.1:${port}`, workers, args: ['--allow-from', '127.0.0.1/32,::1'] });
    for (let i = 0; i < 3; i++) {
      const refused = await tryFrom('127.0.0.2', '127.0.0.1', port);
      assert.equal(refused.answer, '', `a refused peer gets no answer at all: ${JSON.stringify(refused)}`);
      assert.ok(refused.connected, 'the TCP handshake itself is done by the kernel');
    }
    await app.proc.waitFor(/connection refused by --allow-from/, 10000);
    assert.match(app.proc.output(), /127\.0\.0\.2/, 'the log line names the refused peer');
    const allowed = await uwsgiRequest(`127.0.0.1:${port}`, requestVars('GET', '/hello'), undefined, { timeoutMs: 10000 });
    assert.equal(allowed.body.toString(), 'hello from A');
    assert.equal(app.proc.child.exitCode, null);
  });
}
