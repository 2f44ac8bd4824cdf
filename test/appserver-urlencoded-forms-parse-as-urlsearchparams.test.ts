// request.formData() on an urlencoded body parses with appserver/urlencoded.ts
// instead of URLSearchParams: for any text a UTF-8 body decodes to, it lists
// exactly the entries `new URLSearchParams(text)` lists (names, values, order,
// repeats) — '+', well-formed and malformed percent-encoding, '=' in values,
// empty and missing parts, a leading '?'. Then through a running appserver.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { parseUrlencoded } from '../appserver/urlencoded.ts';
import { nativeRequest, nativeSession, requestVars, startServe } from './helpers/appserver-clients.ts';
import { tempDir } from './helpers/net.ts';

function entries(text: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  parseUrlencoded(text, { append: (name, value) => out.push([name, value]) });
  return out;
}

const reference = (text: string): Array<[string, string]> => [...new URLSearchParams(text)];

// Pieces a form is made of, weighted towards what decoders get wrong.
const hex = fc.constantFrom(...'0123456789abcdefABCDEFgz');
const piece = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom('&', '=', '+', '%', '?', ' ', 'a', 'Z', '9', '-', '.', '*', '~') },
  { weight: 3, arbitrary: fc.tuple(hex, hex).map(([a, b]) => `%${a}${b}`) },
  // Percent-encoded UTF-8 of any code point (surrogates' encodings included), whole or cut short.
  {
    weight: 3,
    arbitrary: fc.tuple(fc.integer({ min: 0, max: 0x10ffff }), fc.boolean()).map(([cp, cut]) => {
      const bytes = Buffer.from(String.fromCodePoint(cp >= 0xd800 && cp <= 0xdfff ? 0xfffd : cp));
      const raw = cp >= 0xd800 && cp <= 0xdfff ? Buffer.from([0xed, 0xa0 | ((cp >> 6) & 0x1f), 0x80 | (cp & 0x3f)]) : bytes;
      const used = cut && raw.length > 1 ? raw.subarray(0, raw.length - 1) : raw;
      return [...used].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('');
    }),
  },
  { weight: 1, arbitrary: fc.constantFrom('%C0%80', '%EF%BB%BF', '%FF', '%', '%2', '%%41', '%2B', '%26', '%3D') },
  // Raw text, non-ASCII included (well-formed: what a UTF-8 decode yields).
  { weight: 2, arbitrary: fc.string({ unit: 'grapheme', maxLength: 4 }) },
);
const form = fc.array(piece, { maxLength: 40 }).map((parts) => parts.join(''));

test('any urlencoded text: the same entries as URLSearchParams', () => {
  fc.assert(
    fc.property(form, (text) => {
      assert.deepEqual(entries(text), reference(text));
    }),
    { numRuns: 5000 },
  );
});

test('the cases by name', () => {
  const cases = [
    '',
    '?',
    '?a=1',
    '??a=1',
    'a',
    'a=',
    '=b',
    '=',
    '&&a=1&&',
    'a=b=c',
    'a+b=c+d',
    'a=%2B%26%3D',
    'name=value+1+%C3%A9',
    'x=%',
    'x=%4',
    'x=%zz1',
    'x=%C3',
    'x=%C3%A9%C3',
    'x=%ED%A0%80',
    'x=%F4%90%80%80',
    'x=%C0%80',
    'x=%EF%BB%BFa',
    'é=ü&ü=é',
    'a=1&a=2&b=3',
  ];
  for (const text of cases) assert.deepEqual(entries(text), reference(text), JSON.stringify(text));
});

test('request.formData() of an urlencoded POST lists what URLSearchParams lists', { timeout: 60_000 }, async () => {
  const { dir, cleanup } = tempDir('gw-urlencoded-');
  writeFileSync(
    path.join(dir, 'app.mjs'),
    `export default { async fetch(request) { const form = await request.formData(); return Response.json({ isForm: form instanceof FormData, entries: [...form] }); } };`,
  );
  const address = `unix:${dir}/app.sock`;
  const app = await startServe([path.join(dir, 'app.mjs'), '--listen', address, '--workers', '0']);
  const session = await nativeSession(address);
  try {
    const body = Buffer.from('a=1&b=x+y+%C3%A9&a=2&c&d=%zz&e=%C3');
    const vars = requestVars('POST', '/', [['content-type', 'application/x-www-form-urlencoded; charset=UTF-8']], String(body.length));
    vars[vars.indexOf('CONTENT_TYPE') + 1] = 'application/x-www-form-urlencoded; charset=UTF-8';
    const r = await nativeRequest(session, vars, body);
    assert.equal(r.status, 200, r.body.toString());
    assert.deepEqual(JSON.parse(r.body.toString()), { isForm: true, entries: reference(body.toString()) });
  } finally {
    session.destroy();
    const code = await app.stop(10_000);
    cleanup();
    assert.equal(code, 0, app.output().slice(-2000));
  }
});
