import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { ErrorCode } from '../protocol/constants.ts';
import { ProtocolError } from '../protocol/errors.ts';
import {
  documentUri,
  encodeUwsgiRequest,
  httpHeadersFromVars,
  UwsgiRequestDecoder,
  varsFromHttpRequest,
} from '../protocol/uwsgi.ts';
import type { Vars } from '../protocol/vars.ts';

interface Decoded {
  vars: Vars | null;
  modifier1: number;
  modifier2: number;
  body: Buffer[];
  ended: boolean;
  err: ProtocolError | null;
}

function decode(bytes: Buffer, cuts: number[] = [], opts = {}): Decoded & { decoder: UwsgiRequestDecoder } {
  const r: Decoded = { vars: null, modifier1: -1, modifier2: -1, body: [], ended: false, err: null };
  const decoder = new UwsgiRequestDecoder(
    {
      onRequest(vars, m1, m2) {
        r.vars = vars;
        r.modifier1 = m1;
        r.modifier2 = m2;
      },
      onBody: (c) => r.body.push(c),
      onEnd: () => {
        r.ended = true;
      },
    },
    opts,
  );
  let at = 0;
  for (const cut of [...cuts, bytes.length]) {
    const err = decoder.push(bytes.subarray(at, cut));
    if (err) r.err = err;
    at = cut;
  }
  return { ...r, decoder };
}

const vars = ['REQUEST_METHOD', 'POST', 'PATH_INFO', '/upload', 'CONTENT_LENGTH', '5', 'HTTP_HOST', 'example.com'];

test('a uwsgi packet has the 4-byte header and the vars block; the decoder returns the same vars and body', () => {
  const head = encodeUwsgiRequest(vars, 0, 0) as Buffer;
  assert.equal(head[0], 0);
  assert.equal(head.readUInt16LE(1), head.length - 4);
  assert.equal(head[3], 0);
  const bytes = Buffer.concat([head, Buffer.from('hello')]);
  for (let i = 0; i <= bytes.length; i++) {
    const r = decode(bytes, i === 0 || i === bytes.length ? [] : [i]);
    assert.equal(r.err, null);
    assert.deepEqual(r.vars, vars);
    assert.equal(Buffer.concat(r.body).toString(), 'hello');
    assert.ok(r.ended);
  }
});

test('body chunks are views into the pushed chunk, not copies', () => {
  const bytes = Buffer.concat([encodeUwsgiRequest(vars) as Buffer, Buffer.from('hello')]);
  const r = decode(bytes);
  assert.equal(r.body.length, 1);
  assert.equal(r.body[0].buffer, bytes.buffer);
});

test('modifiers are carried both ways', () => {
  const r = decode(encodeUwsgiRequest(['A', 'b'], 5, 200) as Buffer);
  assert.equal(r.modifier1, 5);
  assert.equal(r.modifier2, 200);
  assert.ok(r.ended);
});

test('absent or empty CONTENT_LENGTH means no body; HTTP_TRANSFER_ENCODING is ignored', () => {
  for (const v of [['A', 'b'], ['CONTENT_LENGTH', ''], ['CONTENT_LENGTH', '', 'HTTP_TRANSFER_ENCODING', 'chunked']]) {
    const r = decode(encodeUwsgiRequest(v) as Buffer);
    assert.equal(r.err, null);
    assert.ok(r.ended);
    assert.equal(r.body.length, 0);
  }
});

test('bytes past CONTENT_LENGTH are a PROTOCOL_ERROR after the request was delivered', () => {
  const bytes = Buffer.concat([encodeUwsgiRequest(vars) as Buffer, Buffer.from('hello!')]);
  const r = decode(bytes);
  assert.ok(r.ended);
  assert.equal(Buffer.concat(r.body).toString(), 'hello');
  assert.equal(r.err?.code, ErrorCode.PROTOCOL_ERROR);
  // and in a later chunk too
  const r2 = decode(bytes, [bytes.length - 1]);
  assert.equal(r2.err?.code, ErrorCode.PROTOCOL_ERROR);
});

test('an invalid CONTENT_LENGTH is a PROTOCOL_ERROR and no request is delivered', () => {
  for (const cl of ['-1', '1.5', ' 5', '5 ', '0x10', '1234567890123456', 'abc']) {
    const r = decode(encodeUwsgiRequest(['CONTENT_LENGTH', cl]) as Buffer);
    assert.equal(r.err?.code, ErrorCode.PROTOCOL_ERROR, cl);
    assert.equal(r.vars, null);
  }
  const r = decode(encodeUwsgiRequest(['CONTENT_LENGTH', '5', 'CONTENT_LENGTH', '6']) as Buffer);
  assert.equal(r.err?.code, ErrorCode.PROTOCOL_ERROR);
});

test('maxBody refuses a large CONTENT_LENGTH with BODY_TOO_LARGE before reading it, keeping the vars for a 413', () => {
  const r = decode(encodeUwsgiRequest(['CONTENT_LENGTH', '1001', 'PATH_INFO', '/x']) as Buffer, [], { maxBody: 1000 });
  assert.equal(r.err?.code, ErrorCode.BODY_TOO_LARGE);
  assert.equal(r.vars, null);
  assert.deepEqual(r.decoder.vars, ['CONTENT_LENGTH', '1001', 'PATH_INFO', '/x']);
  const ok = decode(Buffer.concat([encodeUwsgiRequest(['CONTENT_LENGTH', '3']) as Buffer, Buffer.from('abc')]), [], { maxBody: 3 });
  assert.equal(ok.err, null);
  assert.ok(ok.ended);
});

test('a datasize above maxVarsSize is VARS_TOO_LARGE before anything is buffered', () => {
  const bytes = encodeUwsgiRequest(['K', 'x'.repeat(500)]) as Buffer;
  const r = decode(bytes.subarray(0, 4), [], { maxVarsSize: 100 });
  assert.equal(r.err?.code, ErrorCode.VARS_TOO_LARGE);
  assert.equal(r.decoder.bufferedBytes, 0);
});

test('a truncated vars block is a PROTOCOL_ERROR', () => {
  const bytes = Buffer.from([0, 5, 0, 0, 3, 0, 0x41, 0x42, 0x43]);
  const r = decode(bytes);
  assert.equal(r.err?.code, ErrorCode.PROTOCOL_ERROR);
  assert.ok(r.err instanceof ProtocolError);
});

test('the encoder refuses vars past 65,535 bytes and odd vars lists', () => {
  assert.equal((encodeUwsgiRequest(['K', 'x'.repeat(65535)]) as ProtocolError).code, ErrorCode.VARS_TOO_LARGE);
  assert.equal((encodeUwsgiRequest(['K']) as ProtocolError).code, ErrorCode.PROTOCOL_ERROR);
});

test('varsFromHttpRequest builds the uwsgi_params vars, joins repeated headers and drops underscored names', () => {
  const v = varsFromHttpRequest({
    method: 'POST',
    url: '/a%20b//c/./d/../e?x=1&y=%20',
    httpVersion: '1.1',
    rawHeaders: [
      'Host',
      'example.com',
      'Content-Type',
      'text/plain',
      'Content-Length',
      '3',
      'Accept',
      'a/b',
      'Cookie',
      'a=1',
      'accept',
      'c/d',
      'cookie',
      'b=2',
      'X_Evil',
      'spoof',
      'X-Forwarded-For',
      '1.2.3.4',
    ],
    remoteAddress: '127.0.0.1',
    remotePort: 5555,
    serverName: 'gw',
    serverPort: 443,
    scheme: 'https',
  });
  assert.deepEqual(v, [
    'QUERY_STRING',
    'x=1&y=%20',
    'REQUEST_METHOD',
    'POST',
    'CONTENT_TYPE',
    'text/plain',
    'CONTENT_LENGTH',
    '3',
    'REQUEST_URI',
    '/a%20b//c/./d/../e?x=1&y=%20',
    'PATH_INFO',
    '/a b/c/e',
    'SERVER_PROTOCOL',
    'HTTP/1.1',
    'REQUEST_SCHEME',
    'https',
    'HTTPS',
    'on',
    'REMOTE_ADDR',
    '127.0.0.1',
    'REMOTE_PORT',
    '5555',
    'SERVER_PORT',
    '443',
    'SERVER_NAME',
    'gw',
    'HTTP_HOST',
    'example.com',
    'HTTP_CONTENT_TYPE',
    'text/plain',
    'HTTP_CONTENT_LENGTH',
    '3',
    'HTTP_ACCEPT',
    'a/b, c/d',
    'HTTP_COOKIE',
    'a=1; b=2',
    'HTTP_X_FORWARDED_FOR',
    '1.2.3.4',
  ]);
});

test('varsFromHttpRequest: no HTTPS var over http, empty CONTENT_* when absent, many repeated headers', () => {
  const raw: string[] = [];
  for (let i = 0; i < 100; i++) raw.push(`X-H${i % 10}`, String(i));
  const v = varsFromHttpRequest({
    method: 'GET',
    url: '/',
    httpVersion: '1.0',
    rawHeaders: raw,
    remoteAddress: '::1',
    remotePort: 1,
    serverName: 's',
    serverPort: 80,
    scheme: 'http',
  });
  assert.equal(v.indexOf('HTTPS'), -1);
  assert.equal(v[v.indexOf('CONTENT_TYPE') + 1], '');
  assert.equal(v[v.indexOf('CONTENT_LENGTH') + 1], '');
  assert.equal(v[v.indexOf('QUERY_STRING') + 1], '');
  assert.equal(v[v.indexOf('HTTP_X_H3') + 1], Array.from({ length: 10 }, (_, i) => String(i * 10 + 3)).join(', '));
});

test('documentUri decodes percent escapes to latin1 bytes and resolves dot segments like NGINX', () => {
  assert.equal(documentUri('/plain/path'), '/plain/path');
  assert.equal(documentUri('/%41%2f%e9'), '/A/\u00e9');
  assert.equal(documentUri('/a/../../b'), '/b');
  assert.equal(documentUri('/a/.'), '/a/');
  assert.equal(documentUri('//x//'), '/x/');
  assert.equal(documentUri('/%2e%2e/etc'), '/etc');
  assert.equal(documentUri('/bad%zz'), '/bad%zz');
});

test('httpHeadersFromVars: HTTP_* back to header names, repeated vars joined, CGI CONTENT_* win', () => {
  const h = httpHeadersFromVars([
    'REQUEST_METHOD',
    'POST',
    'CONTENT_TYPE',
    'application/json',
    'CONTENT_LENGTH',
    '2',
    'HTTP_HOST',
    'h',
    'HTTP_CONTENT_TYPE',
    'text/plain',
    'HTTP_CONTENT_LENGTH',
    '99',
    'HTTP_TRANSFER_ENCODING',
    'chunked',
    'HTTP_COOKIE',
    'a=1',
    'HTTP_COOKIE',
    'b=2',
    'HTTP_X_A',
    '1',
    'HTTP_X_A',
    '2',
    'HTTP_',
    'odd',
  ]);
  assert.deepEqual(h, ['host', 'h', 'cookie', 'a=1; b=2', 'x-a', '1, 2', 'content-type', 'application/json', 'content-length', '2']);
  assert.deepEqual(httpHeadersFromVars(['CONTENT_TYPE', '', 'HTTP_CONTENT_TYPE', 'text/x']), ['content-type', 'text/x']);
});

test('the 4-byte header split across pushes in any way (empty pushes too) gives the same request; nothing stays buffered', () => {
  const piecesArb = fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 6 });
  fc.assert(
    fc.property(fc.nat(255), fc.nat(255), fc.uint8Array({ maxLength: 50 }), piecesArb, (m1, m2, body, pieces) => {
      const v = [...vars.slice(0, 4), 'CONTENT_LENGTH', String(body.length)];
      const bytes = Buffer.concat([encodeUwsgiRequest(v, m1, m2) as Buffer, body]);
      // Cut points inside the header first (repeats = empty pushes), then the rest in one push.
      const cuts: number[] = [];
      let at = 0;
      for (const n of pieces) {
        at = Math.min(3, at + n);
        cuts.push(at);
      }
      const r = decode(bytes, cuts);
      assert.equal(r.err, null);
      assert.deepEqual(r.vars, v);
      assert.equal(r.modifier1, m1);
      assert.equal(r.modifier2, m2);
      assert.ok(Buffer.concat(r.body).equals(Buffer.from(body)));
      assert.ok(r.ended);
      assert.equal(r.decoder.bufferedBytes, 0);
    }),
    { numRuns: 300 },
  );
});
