// Configuration 3, the Node peer: fastify + @fastify/reply-from forwarding every
// request over HTTP/1.1 keep-alive (undici, reply-from's defaults).
// Usage: node --import ./bin/typescript-loader.js bench/apps/reply-from-proxy.ts LISTEN_HOST:PORT http://UPSTREAM:PORT
import replyFrom from '@fastify/reply-from';
import Fastify from 'fastify';
import { parseListen } from './routes.ts';

const [listenArg = '127.0.0.1:8080', upstream = 'http://127.0.0.1:3000'] = process.argv.slice(2);
const app = Fastify({ logger: false, keepAliveTimeout: 75_000, requestTimeout: 0, bodyLimit: 2 ** 40 });
// Hand the raw body stream to reply-from (its documented way to proxy bodies unparsed).
app.addContentTypeParser('*', (_req, payload, done) => done(null, payload));
await app.register(replyFrom, { base: upstream });
app.all('/*', (req, reply) => {
  reply.from(req.url);
});
const listen = parseListen(listenArg);
if ('path' in listen) await app.listen({ path: listen.path });
else await app.listen({ host: listen.host, port: listen.port });
process.stdout.write(`listening on ${listenArg}\n`);
process.on('SIGTERM', () => process.exit(0));
