// StreamTable (the session's open streams by id) must answer exactly as the
// Map it replaces, through any mix of adds, deletes and lookups, including the
// pattern a session makes: ids in increasing order, most short-lived, a few
// (tunnels) held for long.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { StreamTable } from '../protocol/stream-table.ts';

const MAX_ID = 2 ** 31 - 1;

type Op = { kind: 'set' | 'delete' | 'get'; id: number };

function check(ops: Op[]): void {
  const table = new StreamTable<{ id: number }>();
  const model = new Map<number, { id: number }>();
  for (const op of ops) {
    if (op.kind === 'set') {
      const v = { id: op.id };
      table.set(op.id, v);
      model.set(op.id, v);
    } else if (op.kind === 'delete') {
      assert.equal(table.delete(op.id), model.delete(op.id));
    } else {
      assert.equal(table.get(op.id), model.get(op.id));
      assert.equal(table.has(op.id), model.has(op.id));
    }
    assert.equal(table.size, model.size);
  }
  assert.deepEqual(table.valuesArray(), [...model.values()].sort((a, b) => a.id - b.id));
  for (const id of model.keys()) assert.equal(table.get(id), model.get(id));
}

test('any sequence of set/delete/get on ids from a small range gives what a Map gives', () => {
  const op = fc.record({ kind: fc.constantFrom('set' as const, 'delete' as const, 'get' as const), id: fc.integer({ min: 1, max: 200 }) });
  fc.assert(fc.property(fc.array(op, { maxLength: 2000 }), check), { numRuns: 300 });
});

test('ids anywhere in 1..2^31-1 (colliding slots, the largest id) give what a Map gives', () => {
  const id = fc.oneof(fc.integer({ min: 1, max: MAX_ID }), fc.constantFrom(1, MAX_ID, 16, 32, 1024, 1025), fc.integer({ min: 1, max: 64 }).map((k) => k * 1024));
  const op = fc.record({ kind: fc.constantFrom('set' as const, 'delete' as const, 'get' as const), id });
  fc.assert(fc.property(fc.array(op, { maxLength: 1000 }), check), { numRuns: 300 });
});

test('a session-like churn: a million increasing ids, 64 in flight, a few held throughout', () => {
  const table = new StreamTable<number>();
  const held = [3, 1000, 65_536];
  for (const id of held) table.set(id, id);
  const inFlight: number[] = [];
  for (let id = 100_000; id < 1_100_000; id++) {
    table.set(id, id);
    inFlight.push(id);
    if (inFlight.length > 64) assert.equal(table.delete(inFlight.shift() as number), true);
  }
  assert.equal(table.size, 64 + held.length);
  for (const id of held) assert.equal(table.get(id), id);
  for (const id of inFlight) assert.equal(table.get(id), id);
  assert.equal(table.get(100_000), undefined);
  table.clear();
  assert.equal(table.size, 0);
  assert.equal(table.get(held[0]), undefined);
});
