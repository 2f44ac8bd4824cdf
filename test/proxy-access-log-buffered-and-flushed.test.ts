// The access log is on by default and buffered (pino's asynchronous
// destination): with a long flush_interval, lines wait in memory — and none
// is lost: SIGHUP flushes them, and a graceful stop (SIGTERM, SIGINT) writes
// every line of every request that was answered before exiting.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { accessLog, call, startAppserver, startProxy } from './helpers/proxy-harness.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('SIGHUP flushes the buffered access lines; SIGTERM writes every remaining one before exit', { timeout: 60000 }, async (t) => {
  const app = await startAppserver(t, 'A');
  const proxy = await startProxy(t, { upstreams: { app: { servers: [app.address] } }, log: { level: 'info', access: true, flush_interval: '1h' } });
  for (let i = 0; i < 20; i++) assert.equal((await call(`${proxy.url}/first/${i}`)).status, 200);
  await sleep(300);
  // 20 lines of ~250 bytes stay below the buffer size: nothing written yet
  assert.equal(accessLog(proxy).length, 0, 'buffered');
  proxy.proc.kill('SIGHUP');
  let lines = 0;
  for (let i = 0; i < 50 && lines < 20; i++) {
    await sleep(100);
    lines = accessLog(proxy).length;
  }
  assert.equal(lines, 20, 'SIGHUP flushed them');
  for (let i = 0; i < 30; i++) assert.equal((await call(`${proxy.url}/second/${i}`)).status, 200);
  assert.equal(await proxy.proc.stop(10000), 0);
  const paths = accessLog(proxy).map((e) => e.path);
  assert.equal(paths.length, 50, 'every request has its line after the stop');
  assert.equal(paths.filter((p) => String(p).startsWith('/second/')).length, 30);
});

test('SIGINT: the same, through the same graceful stop', { timeout: 60000 }, async (t) => {
  const app = await startAppserver(t, 'A');
  const proxy = await startProxy(t, { upstreams: { app: { servers: [app.address] } }, log: { level: 'info', access: true, flush_interval: '1h' } });
  for (let i = 0; i < 7; i++) assert.equal((await call(`${proxy.url}/x/${i}`)).status, 200);
  await sleep(200);
  assert.equal(accessLog(proxy).length, 0, 'buffered');
  proxy.proc.kill('SIGINT');
  assert.equal(await proxy.proc.exited, 0);
  assert.equal(accessLog(proxy).length, 7);
});
