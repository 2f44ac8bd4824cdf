// The Express scenario's peer upstream: bench/apps/express-api.ts, the same
// module gatewire serve runs, on plain node:http.
// Usage: node --import ./bin/typescript-loader.js bench/apps/express-node-http.ts HOST:PORT
import http from 'node:http';
import app from './express-api.ts';
import { parseListen } from './routes.ts';

const listen = parseListen(process.argv[2] ?? '127.0.0.1:3000');
const server = http.createServer(app);
server.keepAliveTimeout = 75_000;
if ('path' in listen) server.listen(listen.path, () => process.stdout.write(`listening on ${process.argv[2]}\n`));
else server.listen(listen.port, listen.host, () => process.stdout.write(`listening on ${process.argv[2]}\n`));
process.on('SIGTERM', () => process.exit(0));
