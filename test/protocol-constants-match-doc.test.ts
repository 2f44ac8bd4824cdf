// PROTOCOL.md is what another team implements from: its tables of frame
// types, flags, error codes and limits must say exactly what
// protocol/constants.ts says, and list every one of them.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import * as C from '../protocol/constants.ts';

const doc = readFileSync(new URL('../PROTOCOL.md', import.meta.url), 'utf8');

/** Rows `| \`NAME\` | value | ...` of the tables between `heading` and the next heading. */
function table(heading: string): Map<string, string> {
  const lines = doc.split('\n');
  const start = lines.findIndex((l) => l.trim() === heading);
  assert.ok(start >= 0, `PROTOCOL.md has no heading ${heading}`);
  const rows = new Map<string, string>();
  for (let i = start + 1; i < lines.length && !lines[i].startsWith('#'); i++) {
    const m = /^\|\s*`([A-Z0-9_]+)`\s*\|\s*([^|]+?)\s*\|/.exec(lines[i]);
    if (m) {
      assert.ok(!rows.has(m[1]), `${m[1]} listed twice under ${heading}`);
      rows.set(m[1], m[2]);
    }
  }
  assert.ok(rows.size > 0, `no table rows under ${heading}`);
  return rows;
}

function num(text: string): number {
  return text.startsWith('0x') ? Number.parseInt(text.slice(2), 16) : Number(text);
}

function sameSet(doc: Map<string, string>, code: Record<string, unknown>, what: string): void {
  assert.deepEqual([...doc.keys()].sort(), Object.keys(code).sort(), `${what}: PROTOCOL.md and constants.ts list different names`);
}

test('the frame type table matches FrameType', () => {
  const rows = table('### 3.2 Frame types');
  sameSet(rows, C.FrameType, 'frame types');
  for (const [name, value] of rows) assert.equal(num(value), C.FrameType[name as keyof typeof C.FrameType], name);
});

test('the flag table matches Flag', () => {
  const rows = table('### Flags');
  sameSet(rows, C.Flag, 'flags');
  for (const [name, value] of rows) assert.equal(num(value), C.Flag[name as keyof typeof C.Flag], name);
});

test('the error code table matches ErrorCode', () => {
  const rows = table('## 8. Error codes');
  sameSet(rows, C.ErrorCode, 'error codes');
  for (const [name, value] of rows) assert.equal(num(value), C.ErrorCode[name as keyof typeof C.ErrorCode], name);
});

test('the constants table lists every scalar constant with its value', () => {
  const rows = table('## 9. Constants and limits');
  const scalars: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(C)) {
    if (typeof value === 'number' || Buffer.isBuffer(value)) scalars[name] = value;
  }
  sameSet(rows, scalars, 'constants');
  for (const [name, text] of rows) {
    const value = scalars[name];
    if (Buffer.isBuffer(value)) assert.equal(text, JSON.stringify(value.toString('latin1')), name);
    else assert.equal(num(text), value, name);
  }
});
