// Fastify's per-request logger (proxy/request-logger.ts): no pino child is made
// for a request that logs nothing, and a line logged through it is the line
// the child would write, bound to the request id.
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import test from 'node:test';
import pino, { type Logger } from 'pino';
import { parseConfig } from '../proxy/config.ts';
import { RequestLogger } from '../proxy/request-logger.ts';
import { ProxyServer } from '../proxy/server.ts';
import type { Transport, TransportResponse } from '../proxy/transports/transport.ts';
import { captureLines } from './helpers/log-lines.ts';

class Answers implements Transport {
  broken = false;
  async request(): Promise<TransportResponse> {
    const body = this.broken
      ? new Readable({
          read() {
            this.destroy(new Error('upstream body broke'));
          },
        })
      : Readable.from([Buffer.from('ok')]);
    return { statusCode: 200, headers: { 'content-type': 'text/plain' }, body };
  }
  closeHost(): void {}
  async close(): Promise<void> {}
}

test('no pino child per request that logs nothing; an error line carries the request id', async (t) => {
  const out = captureLines();
  const logger = pino({ level: 'info', base: { name: 'gatewire-proxy' } }, out.stream);
  let children = 0;
  const child = logger.child.bind(logger);
  logger.child = ((bindings, opts) => {
    children++;
    return child(bindings, opts);
  }) as Logger['child'];
  const transport = new Answers();
  const config = parseConfig('listen: { host: 127.0.0.1, port: 0 }\nadmin: false\nlog: { access: false }\nroutes: [{ upstream: app }]\nupstreams: { app: { servers: [{ address: "127.0.0.1:1" }] } }\n');
  const proxy = new ProxyServer(config, { logger, transportFactory: () => transport });
  await proxy.app.ready();
  t.after(() => proxy.close());
  const before = children;
  for (let i = 0; i < 10; i++) assert.equal((await proxy.app.inject({ url: `/ok/${i}` })).statusCode, 200);
  assert.equal(children, before, 'no child logger for requests that log nothing');

  transport.broken = true;
  const res = await proxy.app.inject({ url: '/broken', headers: { 'x-request-id': 'rid-broken-1' } });
  assert.equal(res.statusCode, 502);
  const failed = out.lines.map((l) => JSON.parse(l)).filter((e) => e.msg === 'request failed');
  assert.equal(failed.length, 1, out.lines.join(''));
  assert.equal(failed[0].reqId, 'rid-broken-1');
  assert.equal(failed[0].level, 50);
  assert.equal(failed[0].name, 'gatewire-proxy');
  assert.equal(children, before + 1, 'the child is made for the line');
});

test('RequestLogger writes what the pino child writes, and nothing below the level', () => {
  const mine = captureLines();
  const theirs = captureLines();
  const a = pino({ level: 'info', base: { pid: 1 } }, mine.stream);
  const b = pino({ level: 'info', base: { pid: 1 } }, theirs.stream);
  const lazy = new RequestLogger(a, { reqId: 'r-1' }, {});
  const real = b.child({ reqId: 'r-1' }, {});
  for (const l of [lazy, real] as Array<Pick<Logger, 'info' | 'warn' | 'debug' | 'error'>>) {
    l.debug('not written');
    l.info('hello %s', 'world');
    l.warn({ extra: 1 }, 'careful');
    l.error(new Error('boom'));
  }
  const untimed = (s: string) => s.replace(/"time":\d+/, '"time":0').replace(/"stack":"[^"]*"/, '"stack":""');
  assert.deepEqual(mine.lines.map(untimed), theirs.lines.map(untimed));
  assert.equal(mine.lines.length, 3);
  assert.equal(lazy.level, 'info');
  lazy.level = 'debug';
  lazy.debug('now written');
  assert.equal(mine.lines.length, 4);
});
