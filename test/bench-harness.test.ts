// The benchmark harness's pure parts: wrk report parsing (errors are never lost),
// medians and ratios, Markdown table formatting, configuration filters.
// No timing assertions: performance is measured by `npm run bench`, not tested.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CONFIGURATIONS, selectConfigurations } from '../bench/lib/configs.ts';
import { areaOf, type CpuProfile, summarizeProfile } from '../bench/lib/cpuprofile.ts';
import { median, percentile, ratio, sum } from '../bench/lib/stats.ts';
import { formatCell, formatRatio, markdownTable } from '../bench/lib/table.ts';
import { parseWrkOutput, wrkArgs } from '../bench/lib/wrk.ts';

const WRK_CLEAN = `Running 5s test @ http://127.0.0.1:8080/hello
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.43ms  417.24us  14.36ms   93.51%
    Req/Sec    45.64k     2.11k   48.77k    86.00%
  Latency Distribution
     50%    1.35ms
     75%    1.49ms
     90%    1.67ms
     99%    2.92ms
  227040 requests in 5.00s, 30.96MB read
Requests/sec:  45398.23
Transfer/sec:      6.19MB
`;

const WRK_ERRORS = `Running 5s test @ http://127.0.0.1:8080/echo
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   165.10ms   22.01ms   1.02s    91.00%
    Req/Sec   380.12     40.00   450.00     70.00%
  Latency Distribution
     50%  812.00us
     75%  170.00ms
     90%  190.00ms
     99%    1.04s
  1904 requests in 5.01s, 150.00KB read
  Socket errors: connect 3, read 7, write 2, timeout 11
  Non-2xx or 3xx responses: 42
Requests/sec:    380.04
Transfer/sec:     29.94KB
`;

test('wrk report: throughput, percentiles in ms whatever unit wrk printed', () => {
  const r = parseWrkOutput(WRK_CLEAN);
  assert.equal(r.requests, 227040);
  assert.equal(r.durationS, 5);
  assert.equal(r.rps, 45398.23);
  assert.equal(r.p50Ms, 1.35);
  assert.equal(r.p99Ms, 2.92);
  assert.equal(r.errors, 0);
  const e = parseWrkOutput(WRK_ERRORS);
  assert.equal(e.p50Ms, 0.812);
  assert.equal(e.p99Ms, 1040);
  assert.equal(e.durationS, 5.01);
});

test('wrk report: non-2xx responses and every kind of socket error count as errors', () => {
  const e = parseWrkOutput(WRK_ERRORS);
  assert.equal(e.non2xx, 42);
  assert.deepEqual(e.socketErrors, { connect: 3, read: 7, write: 2, timeout: 11 });
  assert.equal(e.errors, 42 + 3 + 7 + 2 + 11);
});

test('wrk report: output without a summary is an error, not a zero', () => {
  assert.throws(() => parseWrkOutput('unable to connect to 127.0.0.1:1 Connection refused\n'), /not understood/);
});

test('wrk arguments: one thread, fixed connections, whole seconds, latency histogram, script last before the URL', () => {
  assert.deepEqual(wrkArgs({ url: 'http://127.0.0.1:1/x', durationS: 5, script: '/t/post.lua', timeoutS: 10 }), [
    '-t1',
    '-c64',
    '-d5s',
    '--latency',
    '--timeout',
    '10s',
    '-s',
    '/t/post.lua',
    'http://127.0.0.1:1/x',
  ]);
  assert.equal(wrkArgs({ url: 'u', durationS: 0.2 })[2], '-d1s');
});

test('median: odd and even counts, non-finite values ignored', () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.equal(median([5, Number.NaN, 1, 3]), 3);
  assert.ok(Number.isNaN(median([])));
});

test('ratio: plain quotient, NaN when a side is missing or zero', () => {
  assert.equal(ratio(9000, 4500), 2);
  assert.ok(Number.isNaN(ratio(1, 0)));
  assert.ok(Number.isNaN(ratio(undefined, 3)));
  assert.ok(Number.isNaN(ratio(3, Number.NaN)));
});

test('percentile (nearest rank) and sum', () => {
  const v = Array.from({ length: 100 }, (_, i) => 100 - i);
  assert.equal(percentile(v, 50), 50);
  assert.equal(percentile(v, 99), 99);
  assert.equal(percentile([7], 99), 7);
  assert.equal(sum([1, 2, Number.NaN, 3]), 6);
});

test('table: thousands separators, fixed decimals, dashes for missing, ratios with ×, pipes escaped', () => {
  assert.equal(formatCell(12345.6), '12,346');
  assert.equal(formatCell(1.234, 2), '1.23');
  assert.equal(formatCell(Number.NaN), '–');
  assert.equal(formatCell(undefined), '–');
  assert.equal(formatRatio(2.345), '2.35×');
  assert.equal(formatRatio(Number.NaN), '–');
  const md = markdownTable(
    [
      { key: 'rps', title: 'req/s' },
      { key: 'ratio3', title: '×(3)' },
      { key: 'p99Ms', title: 'p99 ms', digits: 2 },
      { key: 'errors', title: 'errors' },
    ],
    [
      { id: '3', label: 'peer | http', values: { rps: 4500, ratio3: 1, p99Ms: 31.456, errors: 0 } },
      { id: '2', label: 'gatewire', values: { rps: 9100.4, ratio3: 9100.4 / 4500, p99Ms: Number.NaN, errors: 'did not start' } },
    ],
  );
  assert.equal(
    md,
    [
      '| # | configuration | req/s | ×(3) | p99 ms | errors |',
      '|--:|:--|--:|--:|--:|--:|',
      '| 3 | peer \\| http | 4,500 | 1.00× | 31.46 | 0 |',
      '| 2 | gatewire | 9,100 | 2.02× | – | did not start |',
    ].join('\n'),
  );
});

test('configuration filter: a number selects its variants, ids are unique, the reference rows 3 and 6 exist', () => {
  assert.deepEqual(
    selectConfigurations('2,3').map((c) => c.id),
    ['2', '2q', '2u', '3'],
  );
  assert.deepEqual(
    selectConfigurations('2u').map((c) => c.id),
    ['2u'],
  );
  assert.equal(selectConfigurations(undefined).length, CONFIGURATIONS.length);
  const ids = CONFIGURATIONS.map((c) => c.id);
  assert.equal(new Set(ids).size, ids.length);
  assert.ok(ids.includes('3') && ids.includes('6'));
});

test('cpu profile summary: self time per function, idle excluded from the busy share, inclusive time through callers, areas by package', () => {
  const frame = (functionName: string, url: string) => ({ functionName, url, lineNumber: 9, columnNumber: 0 });
  const profile: CpuProfile = {
    nodes: [
      { id: 1, callFrame: frame('(root)', ''), children: [2, 3, 5] },
      { id: 2, callFrame: frame('(idle)', ''), children: [] },
      { id: 3, callFrame: frame('handle', 'file:///r/proxy/server.ts'), children: [4] },
      { id: 4, callFrame: frame('send', 'file:///r/node_modules/fastify/lib/reply.js'), children: [] },
      { id: 5, callFrame: frame('(garbage collector)', ''), children: [] },
    ],
    startTime: 0,
    endTime: 1000,
    // the delta at index i+1 is the time of sample i
    samples: [2, 3, 4, 4, 5, 2],
    timeDeltas: [0, 400, 100, 200, 100, 100],
  };
  const s = summarizeProfile(profile);
  assert.equal(s.totalUs, 900);
  assert.equal(s.idleUs, 400);
  assert.equal(s.busyUs, 500);
  const self = Object.fromEntries(s.functions.map((f) => [f.name, f.pct]));
  assert.deepEqual(self, { send: 60, handle: 20, '(garbage collector)': 20 });
  const incl = Object.fromEntries(s.inclusive.map((f) => [f.name, f.pct]));
  assert.equal(incl.handle, 80);
  assert.equal(incl.send, 60);
  assert.equal(s.inclusive.find((f) => f.name === 'handle')!.where, 'proxy/server.ts:10');
  assert.deepEqual(
    s.areas.map((a) => a.area),
    ['fastify', 'proxy/server.ts', '(garbage collector)'],
  );
  assert.equal(areaOf('file:///x/node_modules/@fastify/reply-from/index.js', 'f'), '@fastify/reply-from');
  assert.equal(areaOf('node:events', 'emit'), 'node: internals');
});
