// curl sends `Expect: 100-continue` with bodies over 1 MiB and with chunked
// bodies. The proxy answers it itself (Node sends 100 Continue to the client
// before the body is read) and never forwards the header: undici refuses it
// (UND_ERR_NOT_SUPPORTED), which used to be a 502 — and, counted as a server
// failure with max_fails: 1, took the upstream's only server out so that
// every following request got 503 for fail_timeout. Real curl against real
// gunicorn and waitress (http), a gatewire appserver (native) and uWSGI
// (uwsgi); after the uploads a plain GET still gets 200.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { tempDir } from './helpers/net.ts';
import { type Backend, call, startAppserver, startGunicornFlask, startProxy, startUwsgiFlask, startWaitressFlask } from './helpers/proxy-harness.ts';
import { requireTool } from './helpers/tools.ts';

const run = promisify(execFile);

const CASES: Array<{ name: string; protocol: 'http' | 'gatewire' | 'uwsgi'; start: (t: Parameters<typeof startAppserver>[0]) => Promise<Backend> }> = [
  { name: 'gunicorn', protocol: 'http', start: (t) => startGunicornFlask(t, 'gunicorn') },
  { name: 'waitress', protocol: 'http', start: (t) => startWaitressFlask(t, 'waitress') },
  { name: 'gatewire serve', protocol: 'gatewire', start: (t) => startAppserver(t, 'native') },
  { name: 'uWSGI', protocol: 'uwsgi', start: (t) => startUwsgiFlask(t, 'uwsgi') },
];

for (const c of CASES) {
  test(`curl uploads with Expect: 100-continue reach ${c.name} (${c.protocol}); the only server is never taken out`, { timeout: 90000 }, async (t) => {
    const curl = requireTool('curl');
    const { dir, cleanup } = tempDir('gwx-');
    t.after(cleanup);
    const file = path.join(dir, 'body.bin');
    writeFileSync(file, Buffer.alloc(3 * 1024 * 1024 + 7, 5));
    const backend = await c.start(t);
    const proxy = await startProxy(t, { upstreams: { app: { protocol: c.protocol, servers: [backend.address], max_fails: 1, fail_timeout: '30s', max_body: '10mb' } } });
    const upload = async (extra: string[]) => {
      const { stdout, stderr } = await run(curl, ['-sS', '-v', '-o', '-', '-w', '\n%{http_code}', ...extra, `${proxy.url}/upload`], { maxBuffer: 1 << 24 });
      assert.match(stderr, /> Expect: 100-continue/i, 'curl sent Expect: 100-continue');
      const lines = stdout.trimEnd().split('\n');
      return { status: Number(lines.pop()), body: JSON.parse(lines.join('\n')) as { bodyLen: number; headers: Record<string, string> } };
    };
    // a body over 1 MiB (curl adds Expect by itself), then the same body chunked
    const big = await upload(['--data-binary', `@${file}`, '-H', 'Content-Type: application/octet-stream']);
    assert.equal(big.status, 200);
    assert.equal(big.body.bodyLen, 3 * 1024 * 1024 + 7);
    const chunked = await upload(['--data-binary', `@${file}`, '-H', 'Transfer-Encoding: chunked', '-H', 'Content-Type: application/octet-stream']);
    assert.equal(chunked.status, 200);
    assert.equal(chunked.body.bodyLen, 3 * 1024 * 1024 + 7);
    const expectSeen = Object.keys(big.body.headers).some((h) => h.toLowerCase() === 'expect');
    assert.equal(expectSeen, false, 'Expect never reaches the app');
    const get = await call(`${proxy.url}/after`);
    assert.equal(get.status, 200);
  });
}
