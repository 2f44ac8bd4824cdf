// A Node (req, res) listener under `gatewire serve` sees the request and
// response events node:http gives it, each once and in node:http's order:
// 'finish' then the response's 'close'; the request's 'end' (when the body is
// read or dropped) and one 'close'. The same listener runs on node:http and
// on the app server (in-process, over a native session), and the recorded
// events are compared.
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, request as httpRequest, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { describe, test } from 'node:test';
import type { LoadedApp } from '../appserver/app.ts';
import { createLogger } from '../appserver/log.ts';
import { parseServeOptions, type ServeOptions } from '../appserver/options.ts';
import { AppServer } from '../appserver/server.ts';
import { nativeRequest, nativeSession, requestVars } from './helpers/appserver-clients.ts';
import { tempDir } from './helpers/net.ts';

type Case = { name: string; method: 'GET' | 'POST'; body?: Buffer; read: boolean };

const CASES: Case[] = [
  { name: 'GET, body-less', method: 'GET', read: false },
  { name: 'POST, body read', method: 'POST', body: Buffer.from('x'.repeat(3000)), read: true },
  { name: 'POST, small body never read', method: 'POST', body: Buffer.from('{"a":1}'), read: false },
];

/** A listener that answers after the body (if read) and records what it sees until both objects have closed. */
function recordingListener(read: boolean, done: (events: string[]) => void) {
  return (req: IncomingMessage, res: ServerResponse) => {
    const events: string[] = [];
    let closes = 0;
    const settle = () => {
      // A little longer than any tick-scheduled event: a second 'close' would land here.
      if (++closes === 2) setTimeout(() => done(events), 50);
    };
    req.on('end', () => events.push('req end'));
    req.on('close', () => {
      events.push('req close');
      settle();
    });
    res.on('finish', () => events.push('res finish'));
    res.on('close', () => {
      events.push('res close');
      settle();
    });
    const answer = (n: number) => {
      res.setHeader('content-type', 'text/plain');
      res.end(`got ${n}`);
    };
    if (read) {
      let n = 0;
      req.on('data', (c: Buffer) => {
        n += c.length;
      });
      req.on('end', () => answer(n));
    } else answer(0);
  };
}

function sorted(events: string[]): string[] {
  // Only the counts and the response's order are node:http's contract; the interleaving of req and res events is timing.
  return [...events].sort();
}

async function onNodeHttp(c: Case): Promise<string[]> {
  let resolve!: (e: string[]) => void;
  const seen = new Promise<string[]>((r) => {
    resolve = r;
  });
  const server = createServer(recordingListener(c.read, resolve));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((r, reject) => {
    const req = httpRequest({ port, host: '127.0.0.1', method: c.method, path: '/x', headers: c.body ? { 'content-length': c.body.length } : {} }, (res) => {
      res.resume();
      res.on('end', () => r());
    });
    req.on('error', reject);
    req.end(c.body);
  });
  const events = await seen;
  server.close();
  return events;
}

async function onAppServer(c: Case): Promise<string[]> {
  let resolve!: (e: string[]) => void;
  const seen = new Promise<string[]>((r) => {
    resolve = r;
  });
  const app: LoadedApp = { kind: 'node', name: 'recorder', listener: recordingListener(c.read, resolve) };
  const server = new AppServer(app, parseServeOptions(['app.ts']) as ServeOptions, createLogger('silent'));
  const { dir, cleanup } = tempDir('gw-node-events-');
  const sock = path.join(dir, 'app.sock');
  const listener = server.createListener();
  await new Promise<void>((r) => listener.listen(sock, r));
  const session = await nativeSession(`unix:${sock}`);
  try {
    const r = await nativeRequest(session, requestVars(c.method, '/x', [], c.body ? String(c.body.length) : ''), c.body);
    assert.equal(r.status, 200);
    assert.equal(r.body.toString(), `got ${c.read ? c.body!.length : 0}`);
    return await seen;
  } finally {
    session.destroy();
    await server.stop(1000);
    cleanup();
  }
}

describe('a Node listener sees each request and response event once, as on node:http', () => {
  for (const c of CASES) {
    test(c.name, async () => {
      const reference = await onNodeHttp(c);
      const ours = await onAppServer(c);
      assert.equal(ours.filter((e) => e === 'req close').length, 1, `req 'close' once: ${ours.join(', ')}`);
      assert.equal(ours.filter((e) => e === 'res close').length, 1, `res 'close' once: ${ours.join(', ')}`);
      assert.ok(ours.indexOf('res finish') < ours.indexOf('res close'), `'finish' before 'close': ${ours.join(', ')}`);
      if (c.read || c.method === 'GET') assert.deepEqual(sorted(ours), sorted(reference), `node:http: ${reference.join(', ')}`);
    });
  }
});
