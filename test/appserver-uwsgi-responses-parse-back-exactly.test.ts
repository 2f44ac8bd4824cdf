// What the appserver writes on a uwsgi connection (a raw HTTP/1.1 response,
// head and body in one write, the connection closed as soon as it is in the
// kernel) parses back to exactly what the app answered: any status, any
// latin1 header values, bodies on both sides of the copy-or-writev threshold,
// with the request body read by the app, left unread, or absent.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { requestVars, startServe, uwsgiRequest } from './helpers/appserver-clients.ts';
import { tempDir } from './helpers/net.ts';
import type { Proc } from './helpers/procs.ts';

const nameArb = fc.stringMatching(/^[a-z][a-z0-9-]{0,15}$/).map((s) => `x-t-${s}`);
// Field values as Fetch keeps them: no leading/trailing whitespace, no CR/LF/NUL; latin1 beyond ASCII.
const codeArb = fc.oneof(fc.integer({ min: 0x21, max: 0x7e }), fc.integer({ min: 0xa1, max: 0xff }), fc.constant(0x20));
// Short values and long ones (the head writer copies short strings itself and hands long ones to latin1Write).
const valueArb = fc
  .oneof(fc.array(codeArb, { maxLength: 20 }), fc.array(codeArb, { minLength: 40, maxLength: 300 }))
  .map((codes) => String.fromCharCode(...codes).trim());
const headersArb = fc.uniqueArray(fc.tuple(nameArb, valueArb), { maxLength: 12, selector: ([n]) => n });
const statusArb = fc.constantFrom(200, 201, 202, 203, 206, 299, 400, 404, 418, 451, 500, 503, 599);
const sizeArb = fc.oneof(fc.integer({ min: 0, max: 64 }), fc.integer({ min: 16 * 1024 - 200, max: 16 * 1024 + 200 }), fc.integer({ min: 0, max: 200_000 }));
const uploadArb = fc.constantFrom('none', 'read', 'unread');

describe('uwsgi responses parse back exactly', { timeout: 180_000 }, () => {
  const { dir, cleanup } = tempDir('gw-uwr-');
  const addr = `unix:${dir}/app.sock`;
  let app: Proc;

  before(async () => {
    app = await startServe(['test/apps/uwsgi-response-spec.ts', '--listen', addr, '--workers', '0']);
  });

  after(async () => {
    await app?.stop(10_000);
    cleanup();
  });

  test('status, headers in order and body are what the app answered; content-length is the body size', async () => {
    await fc.assert(
      fc.asyncProperty(statusArb, headersArb, sizeArb, uploadArb, async (status, headers, size, upload) => {
        const upBody = upload === 'none' ? undefined : Buffer.alloc(upload === 'read' ? 70_000 : 3000, 7);
        const query = `s=${status}&n=${size}${upload === 'read' ? '&read=1' : ''}`;
        const vars = requestVars(upBody ? 'POST' : 'GET', `/spec?${query}`, [['x-spec', JSON.stringify(headers)]], upBody ? String(upBody.length) : '');
        const res = await uwsgiRequest(addr, vars, upBody);
        assert.equal(res.status, status);
        const got: Array<[string, string]> = [];
        for (let i = 0; i < res.rawHeaders.length; i += 2) {
          if (res.rawHeaders[i].startsWith('x-t-')) got.push([res.rawHeaders[i], res.rawHeaders[i + 1]]);
        }
        assert.deepEqual(got, headers);
        const cl = res.rawHeaders.indexOf('content-length');
        assert.equal(res.rawHeaders[cl + 1], String(size));
        assert.equal(res.rawHeaders.filter((h) => h === 'connection').length, 1);
        assert.equal(res.body.length, size);
        for (let i = 0; i < size; i += 997) assert.equal(res.body[i], i % 251);
      }),
      { numRuns: 60 },
    );
  });
});
