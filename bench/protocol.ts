// `npm run bench:protocol [-- --rounds 7 --iterations 200000]`
//
// The codec micro-benchmark of issue 2: a typical request (20 headers)
// encoded into one Buffer and decoded back, gatewire native and uwsgi
// classic, side by side with the same request serialised as HTTP/1.1 text
// and parsed by a production HTTP/1.1 parser: Node's own llhttp binding
// (HTTPParser from the internal `_http_common` module — the parser
// node:http's server runs, reused across messages as on a keep-alive
// connection). Cases are interleaved round by round; medians are printed.
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';
import { FrameType } from '../protocol/constants.ts';
import { encodeRequestFrame, FrameDecoder } from '../protocol/frame.ts';
import { encodeUwsgiRequest, httpHeadersFromVars, UwsgiRequestDecoder, varsFromHttpRequest } from '../protocol/uwsgi.ts';
import { decodeVars, type Vars } from '../protocol/vars.ts';
import { median } from './lib/stats.ts';

const { values: args } = parseArgs({
  options: { rounds: { type: 'string', default: '7' }, iterations: { type: 'string', default: '200000' } },
});
const ROUNDS = Number(args.rounds);
const ITERATIONS = Number(args.iterations);

const require = createRequire(import.meta.url);
const { HTTPParser, methods } = require('node:_http_common') as {
  HTTPParser: any;
  methods: string[];
};

// ---------------------------------------------------------------- the request

const method = 'GET';
const url = '/api/v1/items/42?include=owner,tags&page=2';
const rawHeaders = [
  'Host', 'shop.example.com',
  'User-Agent', 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36',
  'Accept', 'application/json, text/plain, */*',
  'Accept-Language', 'en-GB,en;q=0.9,fr;q=0.8',
  'Accept-Encoding', 'gzip, deflate, br, zstd',
  'Referer', 'https://shop.example.com/items?page=1',
  'Cookie', 'session=6f1c2a9b8e7d4c3b2a1f0e9d8c7b6a5f; theme=dark; consent=1',
  'Authorization', 'Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTYifQ.c2lnbmF0dXJl',
  'Cache-Control', 'no-cache',
  'Pragma', 'no-cache',
  'Connection', 'keep-alive',
  'X-Request-Id', '0c4f5e1a-9b7d-4e2f-8a6c-3d5b7f9e1a2c',
  'X-Forwarded-For', '203.0.113.7',
  'X-Forwarded-Proto', 'https',
  'Sec-Fetch-Site', 'same-origin',
  'Sec-Fetch-Mode', 'cors',
  'Sec-Fetch-Dest', 'empty',
  'Sec-Ch-Ua', '"Chromium";v="124", "Google Chrome";v="124"',
  'Sec-Ch-Ua-Platform', '"Linux"',
  'Priority', 'u=1, i',
];
const request = {
  method,
  url,
  httpVersion: '1.1',
  rawHeaders,
  remoteAddress: '203.0.113.7',
  remotePort: 51234,
  serverName: 'shop.example.com',
  serverPort: 443,
  scheme: 'https',
};
const vars: Vars = varsFromHttpRequest(request);
const httpEquivalentVars: Vars = ['REQUEST_METHOD', method, 'REQUEST_URI', url, 'SERVER_PROTOCOL', 'HTTP/1.1', ...rawHeaders];

// ---------------------------------------------------------------- the cases

let sink = 0; // keeps results alive so nothing is optimised away

/** gatewire native: REQUEST frame (one Buffer) → FrameDecoder → vars. */
const frameDecoder = new FrameDecoder(
  {
    onFrame(type, _flags, _id, payload) {
      if (type !== FrameType.REQUEST) return;
      const v = decodeVars(payload) as Vars;
      sink += v.length;
    },
  },
  { expectPreface: false },
);
let streamId = 1;
function nativeCodec(v: Vars): void {
  const buf = encodeRequestFrame(streamId++, v, true) as Buffer;
  frameDecoder.push(buf);
}

/** uwsgi classic: packet (one Buffer) → UwsgiRequestDecoder → vars. A new decoder per request: one request per connection. */
function uwsgiCodec(v: Vars): void {
  const buf = encodeUwsgiRequest(v) as Buffer;
  const d = new UwsgiRequestDecoder({
    onRequest(decoded) {
      sink += decoded.length;
    },
    onBody() {},
    onEnd() {},
  });
  d.push(buf);
}

/** HTTP/1.1: request line + headers serialised to one Buffer → llhttp (Node's binding) → method, url, flat headers. */
const httpParser = new HTTPParser();
httpParser.initialize(HTTPParser.REQUEST, {}, 0, 0);
httpParser[HTTPParser.kOnHeadersComplete] = (_maj: number, _min: number, headers: string[], m: number, u: string) => {
  sink += headers.length + u.length + methods[m].length;
};
httpParser[HTTPParser.kOnMessageComplete] = () => {};
httpParser[HTTPParser.kOnExecute] = () => {};
httpParser[HTTPParser.kOnBody] = () => {};
function httpCodec(m: string, u: string, headers: string[]): void {
  let text = `${m} ${u} HTTP/1.1\r\n`;
  for (let i = 0; i < headers.length; i += 2) text += `${headers[i]}: ${headers[i + 1]}\r\n`;
  const buf = Buffer.from(`${text}\r\n`, 'latin1');
  const r = httpParser.execute(buf);
  if (r instanceof Error) throw r;
}

interface Case {
  name: string;
  run: () => void;
  bytes: number;
}

const httpBytes = (() => {
  let text = `${method} ${url} HTTP/1.1\r\n`;
  for (let i = 0; i < rawHeaders.length; i += 2) text += `${rawHeaders[i]}: ${rawHeaders[i + 1]}\r\n`;
  return Buffer.byteLength(`${text}\r\n`, 'latin1');
})();

const cases: Case[] = [
  { name: 'native REQUEST frame: encode + decode', run: () => nativeCodec(vars), bytes: (encodeRequestFrame(1, vars, true) as Buffer).length },
  { name: 'uwsgi packet: encode + decode', run: () => uwsgiCodec(vars), bytes: (encodeUwsgiRequest(vars) as Buffer).length },
  { name: 'HTTP/1.1 text: serialise + llhttp parse', run: () => httpCodec(method, url, rawHeaders), bytes: httpBytes },
  {
    // Same information as the HTTP/1.1 text (request line + the 20 headers as they are), to compare formats, not vars sets.
    name: 'native REQUEST frame, HTTP-equivalent vars (method, url, protocol + 20 headers): encode + decode',
    run: () => nativeCodec(httpEquivalentVars),
    bytes: (encodeRequestFrame(1, httpEquivalentVars, true) as Buffer).length,
  },
  {
    name: 'native, end to end: rawHeaders → vars → frame → vars → headers',
    run: () => {
      const v = varsFromHttpRequest(request);
      const buf = encodeRequestFrame(streamId++, v, true) as Buffer;
      const back = decodeVars(buf, 8) as Vars;
      sink += httpHeadersFromVars(back).length;
    },
    bytes: (encodeRequestFrame(1, vars, true) as Buffer).length,
  },
];

// ---------------------------------------------------------------- run

function check(): void {
  // The decoders must really produce the request, or the timings mean nothing.
  let got: Vars | null = null;
  new FrameDecoder({ onFrame: (_t, _f, _s, p) => (got = decodeVars(p) as Vars) }, { expectPreface: false }).push(encodeRequestFrame(9, vars, true) as Buffer);
  if (JSON.stringify(got) !== JSON.stringify(vars)) throw new Error('native round trip mismatch');
  let headers: string[] | null = null;
  const p = new HTTPParser();
  p.initialize(HTTPParser.REQUEST, {}, 0, 0);
  p[HTTPParser.kOnHeadersComplete] = (_a: number, _b: number, h: string[]) => (headers = h);
  p[HTTPParser.kOnMessageComplete] = () => {};
  p[HTTPParser.kOnExecute] = () => {};
  let text = `${method} ${url} HTTP/1.1\r\n`;
  for (let i = 0; i < rawHeaders.length; i += 2) text += `${rawHeaders[i]}: ${rawHeaders[i + 1]}\r\n`;
  p.execute(Buffer.from(`${text}\r\n`));
  if (JSON.stringify(headers) !== JSON.stringify(rawHeaders)) throw new Error('llhttp did not parse the request');
}

function time(c: Case, n: number): number {
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) c.run();
  return Number(process.hrtime.bigint() - start) / n;
}

check();
for (const c of cases) time(c, Math.min(20000, ITERATIONS)); // warm up (JIT)
const samples = new Map<string, number[]>(cases.map((c) => [c.name, []]));
for (let r = 0; r < ROUNDS; r++) {
  for (const c of cases) samples.get(c.name)!.push(time(c, ITERATIONS));
}

console.log(`# gatewire protocol codec — ${rawHeaders.length / 2} headers, ${vars.length / 2} vars, median of ${ROUNDS} rounds × ${ITERATIONS} ops (Node ${process.version})\n`);
console.log('| case | bytes | ns/op | ops/s |');
console.log('|---|---:|---:|---:|');
const medians = new Map<string, number>();
for (const c of cases) {
  const ns = median(samples.get(c.name)!);
  medians.set(c.name, ns);
  console.log(`| ${c.name} | ${c.bytes} | ${ns.toFixed(0)} | ${Math.round(1e9 / ns).toLocaleString('en-US')} |`);
}
const http = medians.get(cases[2].name)!;
console.log('');
console.log(`native frame vs HTTP/1.1 + llhttp: ${(http / medians.get(cases[0].name)!).toFixed(2)}× faster`);
console.log(`uwsgi packet vs HTTP/1.1 + llhttp: ${(http / medians.get(cases[1].name)!).toFixed(2)}× faster`);
if (sink === 0) console.log('(sink)');
