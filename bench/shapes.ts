// `npm run bench:shapes [-- --rounds 3] [--seconds 0.6] [--only f/string,n/,"req-data POST 1 MiB"]` (--only matches path and description)
//
// Every common way of writing an app (bench/apps/shapes.ts) through a real
// native session to `gatewire serve --workers 1`, next to node:http serving
// the same handler, both on a Unix socket and loaded from this process with
// the same concurrency. Prints, per shape, the app tier's CPU µs per request
// (utime+stime of the serve master and its worker, and of the node:http
// process, from /proc) and the ratio; the target is every shape ≤ 1.0×.
// Rounds are interleaved (gatewire, node:http, node:http, gatewire, …) and the
// table shows medians. Client CPU (this process) is not counted.
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';
import type { GatewireSession } from '../protocol/session.ts';
import { nativeSession, requestVars } from '../test/helpers/appserver-clients.ts';
import { tempDir } from '../test/helpers/net.ts';
import { GATEWIRE_BIN, type Proc, ROOT, startProcess } from '../test/helpers/procs.ts';
import { TierMonitor } from './lib/procfs.ts';
import { median } from './lib/stats.ts';
import { markdownTable, type TableRow } from './lib/table.ts';

const KIB = 1024;
const MIB = 1024 * KIB;

interface Shape {
  path: string;
  kind: 'fetch' | 'node';
  what: string;
  method?: 'POST';
  body?: Buffer;
  contentType?: string;
  /** The response body length every answer must have (checked on every request). */
  expectLength?: number;
  status?: number;
}

const JSON_BODY = Buffer.from(JSON.stringify(Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`key${i}`, `value ${i} ${'x'.repeat(10)}`]))));
const FORM_BODY = Buffer.from(Array.from({ length: 40 }, (_, i) => `field${i}=value+${i}+%C3%A9`).join('&'));
const K64_BODY = Buffer.alloc(64 * KIB, 0x61);
const M1_BODY = Buffer.alloc(MIB, 0x61);

const post = (body: Buffer, contentType = 'application/octet-stream') => ({ method: 'POST' as const, body, contentType });

const SHAPES: Shape[] = [
  { path: '/f/string', kind: 'fetch', what: "new Response('Hello, World!')", expectLength: 13 },
  { path: '/f/bytes-64k', kind: 'fetch', what: 'Uint8Array 64 KiB, headers object', expectLength: 65536 },
  { path: '/f/buffer-pairs-cl', kind: 'fetch', what: 'Buffer 64 KiB, [name, value] pairs with content-length', expectLength: 65536 },
  { path: '/f/arraybuffer', kind: 'fetch', what: 'ArrayBuffer 64 KiB', expectLength: 65536 },
  { path: '/f/headers-object', kind: 'fetch', what: 'string, a Headers object', expectLength: 13 },
  { path: '/f/null-204', kind: 'fetch', what: 'null body, 204', status: 204, expectLength: 0 },
  { path: '/f/304', kind: 'fetch', what: 'null body, 304 with an etag', status: 304, expectLength: 0 },
  { path: '/f/json', kind: 'fetch', what: 'Response.json(obj)' },
  { path: '/f/redirect', kind: 'fetch', what: 'Response.redirect(url, 302)', status: 302, expectLength: 0 },
  { path: '/f/blob', kind: 'fetch', what: 'a Blob', expectLength: 13 },
  { path: '/f/stream-bytes', kind: 'fetch', what: 'ReadableStream of 4 × 16 KiB Uint8Array', expectLength: 65536 },
  { path: '/f/stream-strings', kind: 'fetch', what: 'ReadableStream of 3 strings', expectLength: 3000 },
  { path: '/f/body-text', kind: 'fetch', what: 'POST 64 KiB, request.text()', ...post(K64_BODY) },
  { path: '/f/body-json', kind: 'fetch', what: 'POST 1.3 KiB JSON, request.json()', ...post(JSON_BODY, 'application/json') },
  { path: '/f/body-arraybuffer', kind: 'fetch', what: 'POST 64 KiB, request.arrayBuffer()', ...post(K64_BODY) },
  { path: '/f/body-formdata', kind: 'fetch', what: 'POST urlencoded form, request.formData()', ...post(FORM_BODY, 'application/x-www-form-urlencoded') },
  { path: '/f/body-reader', kind: 'fetch', what: 'POST 64 KiB, request.body.getReader()', ...post(K64_BODY) },
  { path: '/f/body-for-await', kind: 'fetch', what: 'POST 64 KiB, for await (chunk of request.body)', ...post(K64_BODY) },
  { path: '/f/body-unread', kind: 'fetch', what: 'POST 64 KiB, body never read', ...post(K64_BODY) },
  { path: '/f/body-text', kind: 'fetch', what: 'POST 1 MiB, request.text()', ...post(M1_BODY) },
  { path: '/f/body-reader', kind: 'fetch', what: 'POST 1 MiB, request.body.getReader()', ...post(M1_BODY) },
  { path: '/f/body-for-await', kind: 'fetch', what: 'POST 1 MiB, for await', ...post(M1_BODY) },
  { path: '/n/end-string', kind: 'node', what: "res.end('Hello, World!')", expectLength: 13 },
  { path: '/n/end-buffer-64k', kind: 'node', what: 'res.end(Buffer 64 KiB)', expectLength: 65536 },
  { path: '/n/koa-style', kind: 'node', what: 'Koa-style: statusCode, setHeader, end(JSON)' },
  { path: '/n/write-stream', kind: 'node', what: 'res.write × 3 + end (chunked on node:http)', expectLength: 65536 },
  { path: '/n/writehead-array', kind: 'node', what: 'res.writeHead(200, [flat array])', expectLength: 13 },
  { path: '/n/pipe-file', kind: 'node', what: 'fs.createReadStream(64 KiB).pipe(res)', expectLength: 65536 },
  { path: '/n/express-json', kind: 'node', what: 'Express res.json(obj)' },
  { path: '/n/express-send', kind: 'node', what: "Express res.send('Hello, World!')", expectLength: 13 },
  { path: '/n/express-json-body', kind: 'node', what: 'Express express.json() + res.json, POST 1.3 KiB', ...post(JSON_BODY, 'application/json') },
  { path: '/n/req-data', kind: 'node', what: "POST 64 KiB, req.on('data')", ...post(K64_BODY) },
  { path: '/n/req-pipe', kind: 'node', what: 'POST 64 KiB, req.pipe(writable)', ...post(K64_BODY) },
  { path: '/n/req-data', kind: 'node', what: "POST 1 MiB, req.on('data')", ...post(M1_BODY) },
];

type Send = (shape: Shape) => Promise<void>;

function check(shape: Shape, status: number, length: number): void {
  const want = shape.status ?? 200;
  if (status !== want) throw new Error(`${shape.path}: status ${status}, expected ${want}`);
  if (shape.expectLength !== undefined && length !== shape.expectLength) throw new Error(`${shape.path}: body of ${length} bytes, expected ${shape.expectLength}`);
}

function nativeSender(sessions: GatewireSession[]): Send {
  let next = 0;
  return (shape) =>
    new Promise<void>((resolve, reject) => {
      const session = sessions[next++ % sessions.length];
      const headers: Array<[string, string]> = shape.contentType ? [['content-type', shape.contentType]] : [];
      const vars = requestVars(shape.method ?? 'GET', shape.path, headers, shape.body ? String(shape.body.length) : '');
      if (shape.contentType) vars[vars.indexOf('CONTENT_TYPE') + 1] = shape.contentType;
      const stream = session.request(vars, { endStream: !shape.body });
      let status = 0;
      let length = 0;
      stream.on('response', (s: number) => {
        status = s;
      });
      stream.on('data', (c: Buffer) => {
        length += c.length;
      });
      stream.on('end', () => {
        try {
          check(shape, status, length);
          resolve();
        } catch (err) {
          reject(err);
        }
      });
      stream.on('error', reject);
      if (shape.body) stream.end(shape.body);
    });
}

function httpSender(pool: Pool): Send {
  return async (shape) => {
    const headers: Record<string, string> = { host: 'localhost' };
    if (shape.contentType) headers['content-type'] = shape.contentType;
    const res = await pool.request({ path: shape.path, method: shape.method ?? 'GET', headers, body: shape.body });
    let length = 0;
    for await (const c of res.body) length += (c as Buffer).length;
    check(shape, res.statusCode, length);
  };
}

/** Keeps `concurrency` requests in flight for `seconds` (at least `minRequests`); resolves with the count. */
async function load(send: Send, shape: Shape, concurrency: number, seconds: number, minRequests: number): Promise<number> {
  const until = performance.now() + seconds * 1000;
  let done = 0;
  let started = 0;
  const lane = async () => {
    while (performance.now() < until || started < minRequests) {
      started++;
      await send(shape);
      done++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
  return done;
}

interface Side {
  name: 'gatewire' | 'node:http';
  root: number;
  send: Send;
}

async function measure(side: Side, shape: Shape, concurrency: number, seconds: number): Promise<number> {
  const mon = new TierMonitor(side.root);
  mon.start(1000);
  const n = await load(side.send, shape, concurrency, seconds, 50);
  const usage = mon.stop();
  return (usage.cpuSeconds * 1e6) / n;
}

async function main(): Promise<void> {
  const { values: args } = parseArgs({
    options: {
      rounds: { type: 'string', default: '3' },
      seconds: { type: 'string', default: '0.6' },
      concurrency: { type: 'string', default: '16' },
      only: { type: 'string' },
      'cpu-prof': { type: 'string' },
      // Extra V8/Node flags for the serve processes (and their workers), e.g. '--trace-gc-nvp'.
      'node-flags': { type: 'string' },
      'node-flags-out': { type: 'string' },
    },
  });
  const rounds = Number(args.rounds);
  const seconds = Number(args.seconds);
  const concurrency = Number(args.concurrency);
  const filters = args.only ? args.only.split(',') : null;
  const shapes = SHAPES.filter((s) => filters === null || filters.some((f) => `${s.path} ${s.what}`.includes(f)));
  const { dir, cleanup } = tempDir('gw-shapes-');
  const procs: Proc[] = [];
  try {
    // --cpu-prof DIR: every serve process (and its worker, which inherits execArgv) and the node:http reference write a profile there.
    const nodeFlags = args['cpu-prof'] ? ['--cpu-prof', '--cpu-prof-dir', args['cpu-prof']] : [];
    if (args['node-flags']) nodeFlags.push(...args['node-flags'].split(' ').filter(Boolean));
    const serve = async (app: string, sock: string) => {
      const p = startProcess(process.execPath, [...nodeFlags, GATEWIRE_BIN, 'serve', `bench/apps/${app}`, '--listen', `unix:${dir}/${sock}`, '--workers', '1'], { cwd: ROOT });
      procs.push(p);
      await p.waitFor(/gatewire serve: listening on /, 30_000);
      return p;
    };
    const gwFetch = await serve('shapes-fetch.ts', 'fetch.sock');
    const gwNode = await serve('shapes-node.ts', 'node.sock');
    // The reference is profiled too (--cpu-prof): the two profiles side by side say what gatewire adds.
    const nodeHttp = startProcess(process.execPath, [...(args['cpu-prof'] ? ['--cpu-prof', '--cpu-prof-dir', args['cpu-prof']] : []), '--import', `${ROOT}/bin/typescript-loader.js`, `${ROOT}/bench/apps/shapes-node-http.ts`, `unix:${dir}/http.sock`], { cwd: ROOT });
    procs.push(nodeHttp);
    await nodeHttp.waitFor(/listening/, 30_000);
    const sessions = async (sock: string) => Promise.all(Array.from({ length: 4 }, () => nativeSession(`unix:${dir}/${sock}`)));
    const fetchSessions = await sessions('fetch.sock');
    const nodeSessions = await sessions('node.sock');
    const pool = new Pool('http://localhost', { socketPath: `${dir}/http.sock`, connections: concurrency, keepAliveTimeout: 60_000 });
    const sides = (shape: Shape): [Side, Side] => [
      shape.kind === 'fetch' ? { name: 'gatewire', root: gwFetch.child.pid!, send: nativeSender(fetchSessions) } : { name: 'gatewire', root: gwNode.child.pid!, send: nativeSender(nodeSessions) },
      { name: 'node:http', root: nodeHttp.child.pid!, send: httpSender(pool) },
    ];
    // Warm-up: JIT both sides on every shape.
    for (const shape of shapes) for (const side of sides(shape)) await load(side.send, shape, concurrency, 0, shape.body && shape.body.length > 100_000 ? 100 : 500);
    // Let the collectors finish with the warm-up's garbage before the first measurement.
    await new Promise((r) => setTimeout(r, 1500));
    const results = new Map<Shape, { gatewire: number[]; 'node:http': number[] }>();
    for (const s of shapes) results.set(s, { gatewire: [], 'node:http': [] });
    for (let r = 0; r < rounds; r++) {
      for (const shape of shapes) {
        const pair = sides(shape);
        if (r % 2 === 1) pair.reverse();
        for (const side of pair) results.get(shape)![side.name].push(await measure(side, shape, concurrency, seconds));
      }
      process.stderr.write(`round ${r + 1}/${rounds} done\n`);
    }
    const rows: TableRow[] = shapes.map((s) => {
      const res = results.get(s)!;
      const gw = median(res.gatewire);
      const nh = median(res['node:http']);
      return { id: s.path, label: s.what, values: { gw, nh, ratio: gw / nh, verdict: gw / nh <= 1 ? 'ok' : 'over' } };
    });
    const table = markdownTable(
      [
        { key: 'gw', title: 'gatewire serve µs/req' },
        { key: 'nh', title: 'node:http µs/req' },
        { key: 'ratio', title: '×node:http', digits: 2 },
        { key: 'verdict', title: '≤ 1.0×', numeric: false },
      ],
      rows,
    );
    process.stdout.write(`\napp-tier CPU per request, medians of ${rounds} interleaved rounds of ${seconds} s, ${concurrency} requests in flight, Node ${process.version}\n\n${table}\n`);
    const over = rows.filter((r) => (r.values.ratio as number) > 1).length;
    process.stdout.write(`\n${rows.length - over}/${rows.length} shapes at ≤ 1.0× node:http\n`);
    for (const s of [...fetchSessions, ...nodeSessions]) s.destroy();
    await pool.close();
  } finally {
    for (const p of procs) await p.stop(5000);
    // With --node-flags (a GC trace, say) the serve processes' output is the point: keep it.
    if (args['node-flags']) for (const p of procs.slice(0, 2)) writeFileSync(`${args['node-flags-out'] ?? '/tmp'}/gw-shapes-serve-${p.child.pid}.log`, p.output());
    cleanup();
  }
}

await main();
