// What proxy/reply-from-adapter.ts relies on in @fastify/reply-from, checked
// against the installed version so that an upgrade that changes it fails here,
// loudly, instead of mixing up requests: rewriteRequestHeaders and then the
// `undici` instance's request() run synchronously inside reply.from(); `body:
// null` keeps reply-from off the request body; the dispatcher's body (stream or
// Buffer) reaches onResponse as `stream`, the same object; rewriteHeaders sees
// the upstream's header object.
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import test from 'node:test';
import replyFrom from '@fastify/reply-from';
import Fastify, { type FastifyReply } from 'fastify';

test('reply-from calls rewriteRequestHeaders, then the dispatcher, synchronously within reply.from()', async () => {
  const order: string[] = [];
  const bodies: unknown[] = [];
  const payload = Buffer.from('whole body');
  const dispatcher = {
    request(opts: { body?: unknown }, cb: (err: Error | null, res?: object) => void) {
      order.push('dispatch');
      bodies.push(opts.body);
      process.nextTick(cb, null, { statusCode: 201, headers: { 'content-type': 'text/plain', 'x-up': '1' }, body: payload });
    },
    close() {},
    destroy() {},
  };
  const app = Fastify();
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));
  await app.register(replyFrom, { undici: dispatcher as never, base: 'http://upstream.test', retryMethods: [] });
  let seen: unknown = null;
  app.all('/*', (_request, reply) => {
    order.push('from');
    reply.from('/', {
      body: null,
      rewriteRequestHeaders: (_req: unknown, headers: Record<string, unknown>) => {
        order.push('rewrite');
        return headers;
      },
      rewriteHeaders: (headers: Record<string, unknown>) => {
        order.push(`headers:${headers['x-up']}`);
        return headers;
      },
      onResponse: (_req: unknown, rep: FastifyReply, res: unknown) => {
        seen = (res as unknown as { stream: unknown }).stream;
        rep.send((res as unknown as { stream: Buffer }).stream);
      },
    } as never);
    order.push('returned');
    return reply;
  });
  const res = await app.inject({ method: 'POST', url: '/a/b?c=1', payload: 'client body' });
  assert.equal(res.statusCode, 201);
  assert.equal(res.body, 'whole body');
  assert.deepEqual(order, ['from', 'rewrite', 'dispatch', 'returned', 'headers:1']);
  assert.equal(seen, payload, 'the dispatcher body reaches onResponse as is');
  assert.equal(bodies[0], undefined, 'body: null sends no body of reply-from');
  await app.close();
});

test('a streamed body reaches onResponse as the same stream; dispatcher errors reach onError with the cause', async () => {
  const stream = Readable.from([Buffer.from('a'), Buffer.from('b')]);
  const failure = Object.assign(new Error('ours'), { code: 'GW_TEST', statusCode: 504 });
  let n = 0;
  const dispatcher = {
    request(_opts: unknown, cb: (err: Error | null, res?: object) => void) {
      if (n++ === 0) process.nextTick(cb, null, { statusCode: 200, headers: {}, body: stream });
      else process.nextTick(cb, failure);
    },
    close() {},
    destroy() {},
  };
  const app = Fastify();
  await app.register(replyFrom, { undici: dispatcher as never, base: 'http://upstream.test', retryMethods: [] });
  let cause: unknown = null;
  app.get('/*', (_request, reply) => {
    reply.from('/', {
      body: null,
      onResponse: (_req: unknown, rep: FastifyReply, res: unknown) => {
        assert.equal((res as unknown as { stream: unknown }).stream, stream);
        rep.send((res as unknown as { stream: Readable }).stream);
      },
      onError: (rep: FastifyReply, { error }: { error: Error }) => {
        cause = (error as Error & { cause?: unknown }).cause;
        rep.code(504).send('x');
      },
    } as never);
    return reply;
  });
  assert.equal((await app.inject({ url: '/' })).body, 'ab');
  assert.equal((await app.inject({ url: '/' })).statusCode, 504);
  assert.equal(cause, failure);
  await app.close();
});
