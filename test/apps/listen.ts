// Runs an app module that exports an http.Server by itself on node:http (the
// "http" upstream of the proxy tests): node test/apps/listen.ts MODULE PORT
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [file, port] = process.argv.slice(2);
const mod = await import(pathToFileURL(path.resolve(file)).href);
const server = mod.default as import('node:http').Server;
server.listen(Number(port), '127.0.0.1', () => process.stdout.write(`listening on 127.0.0.1:${port}\n`));
process.on('SIGTERM', () => process.exit(0));
