// bench/apps/ws-echo.ts listening by itself. Usage: node --import ./bin/typescript-loader.js bench/apps/ws-echo-standalone.ts HOST:PORT
import server from './ws-echo.ts';

const [host, port] = (process.argv[2] ?? '127.0.0.1:3000').split(':');
server.listen(Number(port), host, () => process.stdout.write(`listening on ${host}:${port}\n`));
process.on('SIGTERM', () => process.exit(0));
