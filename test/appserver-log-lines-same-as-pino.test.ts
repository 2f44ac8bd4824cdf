// The appserver's master and workers write their log lines by hand
// (supervisor/log.ts) instead of loading pino; this proves the lines are the
// ones pino writes for the same calls — bindings, fields, level filtering,
// and `err` through pino's error serializer (causes, own fields, aggregate
// errors) — and fails loudly if a pino upgrade changes its format.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { createMasterLog } from '../supervisor/log.ts';

type Call = [level: 'debug' | 'info' | 'warn' | 'error', fields: object | string, msg?: string];

function linesOf(calls: Call[], level: string, bindings: Record<string, unknown>) {
  const mine: string[] = [];
  const theirs: string[] = [];
  const ours = createMasterLog(level, bindings, (line) => mine.push(line));
  const reference = pino({ level, base: { pid: process.pid, ...bindings } }, { write: (line: string) => theirs.push(line) });
  for (const [lvl, fields, msg] of calls) {
    ours[lvl](fields, msg);
    if (typeof fields === 'string') reference[lvl](fields);
    else reference[lvl](fields, msg);
  }
  const untimed = (lines: string[]) => lines.map((l) => l.replace(/"time":\d+/, '"time":0'));
  return { mine: untimed(mine), theirs: untimed(theirs) };
}

function errnoError(): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error('listen EADDRINUSE: address already in use /tmp/x.sock');
  err.code = 'EADDRINUSE';
  err.errno = -98;
  err.syscall = 'listen';
  return err;
}

test('worker and master log lines are byte for byte the lines pino writes', () => {
  const inner = new RangeError('inner');
  const withCause = new Error('outer', { cause: new TypeError('middle', { cause: inner }) });
  const nested = Object.assign(new Error('has an error field'), { other: new SyntaxError('nested'), detail: { a: [1, 'b'] } });
  const calls: Call[] = [
    ['info', { why: 'master asked', inflight: 0 }, 'worker stopping gracefully'],
    ['warn', 'second signal: exiting now'],
    ['debug', { hidden: true }, 'below the level: not written'],
    ['error', { err: new Error('boom'), method: 'GET', url: '/x?a="q"' }, 'app error'],
    ['error', { err: errnoError() }, 'listener error'],
    ['error', { err: withCause }, 'app error after the response head'],
    ['error', { err: new AggregateError([new Error('one'), new TypeError('two')], 'several') }, 'several failed'],
    ['error', { err: nested }, 'nested'],
    ['warn', { skipped: undefined, fn: () => 1, n: 1.5, nan: Number.NaN, list: [1, null], text: 'tab\t"quote" ünï' }, 'odd fields'],
    ['info', { err: 'not an error' }, 'err that is a string'],
    ['info', {}, 'no fields'],
  ];
  const { mine, theirs } = linesOf(calls, 'info', { worker: 3 });
  assert.equal(mine.length, calls.length - 1);
  assert.deepEqual(mine, theirs);
});

test('the level threshold and the bindings match pino at every level', () => {
  const calls: Call[] = [
    ['debug', { a: 1 }, 'd'],
    ['info', { a: 2 }, 'i'],
    ['warn', 'w'],
    ['error', { a: 3 }, 'e'],
  ];
  for (const level of ['debug', 'info', 'warn', 'error', 'silent']) {
    const { mine, theirs } = linesOf(calls, level, { role: 'master' });
    assert.deepEqual(mine, theirs, level);
  }
});
