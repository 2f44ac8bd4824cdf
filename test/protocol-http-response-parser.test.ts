import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ErrorCode } from '../protocol/constants.ts';
import { HttpResponseError, HttpResponseParser, type HttpResponseParserOptions } from '../protocol/http-response.ts';

interface Parsed {
  heads: Array<{ status: number; reason: string; headers: string[] }>;
  body: string;
  ends: number;
  err: HttpResponseError | null;
  parser: HttpResponseParser;
}

function parse(input: string | Buffer, opts: HttpResponseParserOptions & { cuts?: number[]; eof?: boolean } = {}): Parsed {
  const bytes = typeof input === 'string' ? Buffer.from(input, 'latin1') : input;
  const r = { heads: [] as Parsed['heads'], body: [] as Buffer[], ends: 0 };
  const parser = new HttpResponseParser(
    {
      onHead: (status, reason, headers) => r.heads.push({ status, reason, headers }),
      onBody: (c) => r.body.push(Buffer.from(c)),
      onEnd: () => {
        r.ends++;
      },
    },
    opts,
  );
  let err: HttpResponseError | null = null;
  let at = 0;
  for (const cut of [...(opts.cuts ?? []), bytes.length]) {
    err = parser.push(bytes.subarray(at, cut)) ?? err;
    at = cut;
  }
  if (opts.eof) err = parser.finish() ?? err;
  return { heads: r.heads, body: Buffer.concat(r.body).toString('latin1'), ends: r.ends, err, parser };
}

/** Parses the input whole, then split at every single boundary, and checks every split gives the same result. */
function parseEverySplit(input: string, opts: HttpResponseParserOptions & { eof?: boolean } = {}): Parsed {
  const whole = parse(input, opts);
  for (let i = 1; i < input.length; i++) {
    const split = parse(input, { ...opts, cuts: [i] });
    assert.deepEqual(split.heads, whole.heads, `split at ${i}`);
    assert.equal(split.body, whole.body, `split at ${i}`);
    assert.equal(split.ends, whole.ends, `split at ${i}`);
    assert.equal(split.err?.kind, whole.err?.kind, `split at ${i}`);
  }
  return whole;
}

test('status line, repeated headers kept in order, body by Content-Length', () => {
  const r = parseEverySplit('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Empty:\r\n\r\nhello');
  assert.equal(r.err, null);
  assert.deepEqual(r.heads, [{ status: 200, reason: 'OK', headers: ['Content-Length', '5', 'Set-Cookie', 'a=1', 'Set-Cookie', 'b=2', 'X-Empty', ''] }]);
  assert.equal(r.body, 'hello');
  assert.equal(r.ends, 1);
  assert.equal(r.parser.framing, 'length');
});

test('CGI-style Status header with no status line; the Status header is not passed on', () => {
  const r = parseEverySplit('Status: 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nno');
  assert.deepEqual(r.heads, [{ status: 404, reason: 'Not Found', headers: ['Content-Type', 'text/plain', 'Content-Length', '2'] }]);
  assert.equal(r.body, 'no');
  const noStatus = parse('Content-Type: text/plain\r\n\r\n', { eof: true });
  assert.equal(noStatus.heads[0].status, 200);
  const redirect = parse('Location: /x\r\n\r\n', { eof: true });
  assert.equal(redirect.heads[0].status, 302);
  assert.equal(parse('Status: 4x4\r\n\r\n').err?.kind, 'INVALID_STATUS');
});

test('bare LF line endings are accepted (CGI scripts)', () => {
  const r = parseEverySplit('HTTP/1.0 201 Created\nContent-Length: 1\n\nx');
  assert.equal(r.heads[0].status, 201);
  assert.equal(r.body, 'x');
  assert.equal(r.ends, 1);
});

test('chunked body with extensions and trailers is de-chunked', () => {
  const r = parseEverySplit(
    'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nA ; a=b;c\r\n, world!!!\r\n0\r\nX-Trailer: t\r\nX-Other: u\r\n\r\n',
  );
  assert.equal(r.err, null);
  assert.equal(r.body, 'hello, world!!!');
  assert.equal(r.ends, 1);
  assert.equal(r.parser.framing, 'chunked');
});

test('Content-Length together with Transfer-Encoding is refused, in either order, whatever the coding (RFC 9112 §6.3)', () => {
  for (const input of [
    'HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n',
    'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5\r\npwned\r\n0\r\n\r\n',
    'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: gzip\r\n\r\nzz',
    'Status: 200 OK\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
  ]) {
    const r = parseEverySplit(input);
    assert.equal(r.err?.kind, 'INVALID_CONTENT_LENGTH', JSON.stringify(input));
    assert.deepEqual(r.heads, [], 'no head is handed out');
    assert.equal(r.body, '');
  }
});

test('no Content-Length and no chunking: the body ends at connection close', () => {
  const r = parseEverySplit('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end', { eof: true });
  assert.equal(r.body, 'until the end');
  assert.equal(r.ends, 1);
  assert.equal(r.err, null);
  assert.equal(parse('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz', { eof: true }).body, 'zz');
});

test('204, 304, 101 and HEAD responses have no body; interim 1xx heads are skipped', () => {
  for (const status of [204, 304]) {
    const r = parse(`HTTP/1.1 ${status} X\r\nContent-Length: 10\r\n\r\n`);
    assert.equal(r.ends, 1);
    assert.equal(r.parser.framing, 'none');
  }
  const head = parse('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n', { isHead: true });
  assert.equal(head.ends, 1);
  assert.equal(head.body, '');
  const interim = parseEverySplit('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
  assert.deepEqual(
    interim.heads.map((h) => h.status),
    [200],
  );
  assert.equal(interim.body, 'ok');
});

test('bytes past Content-Length are counted, never delivered', () => {
  const r = parse('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA');
  assert.equal(r.body, 'ok');
  assert.equal(r.ends, 1);
  assert.equal(r.err, null);
  assert.equal(r.parser.excessBytes, 5);
});

test('a head larger than maxHeaderSize is HEADERS_TOO_LARGE, whole or split, and never buffered past the limit', () => {
  const big = `HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(300)}\r\n\r\n`;
  for (const cuts of [[], [10], [100, 200, 250]]) {
    const r = parse(big, { maxHeaderSize: 256, cuts });
    assert.equal(r.err?.kind, 'HEADERS_TOO_LARGE');
    assert.equal(r.err?.code, ErrorCode.VARS_TOO_LARGE);
    assert.ok(r.parser.bufferedBytes <= 256);
  }
  const endless = new HttpResponseParser({ onHead() {}, onBody() {}, onEnd() {} }, { maxHeaderSize: 1000 });
  let err: HttpResponseError | null = null;
  for (let i = 0; i < 100 && !err; i++) {
    err = endless.push(Buffer.from('X-A: bbbbbbbbbbbbbbbb\r\n'));
    assert.ok(endless.bufferedBytes <= 1000);
  }
  assert.equal(err?.kind, 'HEADERS_TOO_LARGE');
});

test('malformed responses end in a typed error', () => {
  const cases: Array<[string, string]> = [
    ['HTTP/2.0 200 OK\r\n\r\n', 'INVALID_STATUS'],
    ['HTTP/1.1 20 OK\r\n\r\n', 'INVALID_STATUS'],
    ['HTTP/1.1 200OK\r\n\r\n', 'INVALID_STATUS'],
    ['HTTP/1.1 700 Odd\r\n\r\n', 'INVALID_STATUS'],
    ['HTTP/1.1 200 O\x00K\r\n\r\n', 'INVALID_STATUS'],
    ['HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n', 'INVALID_HEADER'],
    ['HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n', 'INVALID_HEADER'],
    ['HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n', 'INVALID_HEADER'],
    ['HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n', 'INVALID_HEADER'],
    ['HTTP/1.1 200 OK\r\n: novalue\r\n\r\n', 'INVALID_HEADER'],
    ['HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n', 'INVALID_CONTENT_LENGTH'],
    ['HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n', 'INVALID_CONTENT_LENGTH'],
    ['HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n', 'INVALID_CONTENT_LENGTH'],
    ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', 'INVALID_CHUNK'],
    ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy\r\n', 'INVALID_CHUNK'],
    ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1 2\r\n', 'INVALID_CHUNK'],
    ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;\x00\r\n', 'INVALID_CHUNK'],
    ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n', 'INVALID_CHUNK'],
    ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nBad Trailer\r\n\r\n', 'INVALID_HEADER'],
  ];
  for (const [input, kind] of cases) {
    const r = parse(input);
    assert.ok(r.err instanceof HttpResponseError, JSON.stringify(input));
    assert.equal(r.err.kind, kind, JSON.stringify(input));
    assert.equal(r.err.code, ErrorCode.PROTOCOL_ERROR);
    // dead for good
    assert.equal(r.parser.push(Buffer.from('HTTP/1.1 200 OK\r\n\r\n')), r.err);
  }
  assert.equal(parse('HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello').body, 'hello');
});

test('EOF before the response is complete is TRUNCATED', () => {
  for (const input of ['', 'HTTP/1.1 200 OK\r\n', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n']) {
    assert.equal(parse(input, { eof: true }).err?.kind, 'TRUNCATED', JSON.stringify(input));
  }
  assert.equal(parse('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok', { eof: true }).err, null);
});

test('body chunks are zero-copy views into the pushed chunk', () => {
  const bytes = Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello');
  const seen: Buffer[] = [];
  const p = new HttpResponseParser({ onHead() {}, onBody: (c) => seen.push(c), onEnd() {} });
  assert.equal(p.push(bytes), null);
  assert.equal(seen[0].buffer, bytes.buffer);
});
