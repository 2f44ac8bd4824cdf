// node:http serving shapes.ts's Node listener (which also answers the Fetch
// shapes the way node:http code would): the reference of bench/shapes.ts.
// Usage: node bench/apps/shapes-node-http.ts unix:/path.sock | host:port
import { createServer } from 'node:http';
import { parseListen } from './routes.ts';
import { nodeApp } from './shapes.ts';

const server = createServer({ keepAliveTimeout: 75_000 }, nodeApp);
server.listen(parseListen(process.argv[2] ?? '127.0.0.1:0'), () => {
  process.stdout.write(`node:http shapes listening on ${process.argv[2]}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
