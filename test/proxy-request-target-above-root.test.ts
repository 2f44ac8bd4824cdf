import assert from 'node:assert/strict';
import { test } from 'node:test';
import { climbsAboveRoot } from '../proxy/request-target.ts';

// [path, climbs above "/"]: only these are refused (400); every other path goes upstream as sent.
const CASES: Array<[string, boolean]> = [
  ['/', false],
  ['/hello', false],
  ['/static/app.min.js', false],
  ['/[...slug]', false],
  ['/...', false],
  ['/.', false],
  ['/a/./b/../c', false],
  ['/a/b/..', false],
  ['/a/..', false],
  ['/a/%2e%2e/b', false],
  ['/a/%2E%2e%2Fb', false],
  ['/x/.%2e/y', false],
  ['//double//slashes///', false],
  ['/a%2fb', false],
  ['/a\\..\\b', false],
  ['/;/x;y=1', false],
  ['/%2', false],
  ['/a/..%', false],
  ['/..', true],
  ['/../etc/passwd', true],
  ['/%2e%2e/%2e%2e/etc/passwd', true],
  ['/.%2E', true],
  ['/a/b/../../../x', true],
  ['/a/../..', true],
  ['/./..', true],
  // merged slashes: an empty segment is no level to climb back from (NGINX merge_slashes)
  ['//..', true],
  // backslashes and encoded separators count, as the WHATWG URL parser or a decoding app would take them
  ['/..\\x', true],
  ['/a/..%2f..%2fetc', true],
  ['/a%5c..%5C..', true],
];

test('climbsAboveRoot: dot segments, raw or percent-encoded, over /, \\, %2f or %5c, climbing above the root', () => {
  for (const [path, climbs] of CASES) assert.equal(climbsAboveRoot(path), climbs, path);
});
