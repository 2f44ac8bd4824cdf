// Every hex example of PROTOCOL.md lives in test/vectors/*.json. Each one is
// decoded by the codec and compared with its `decoded` description, then
// re-encoded from that description and compared byte for byte.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { ErrorCode, ErrorCodeName, FrameType, FrameTypeName } from '../protocol/constants.ts';
import { ProtocolError } from '../protocol/errors.ts';
import {
  decodeGoaway,
  decodeSettings,
  encodeFrame,
  encodeGoaway,
  encodePing,
  encodeRequestFrame,
  encodeResponseFrame,
  encodeReset,
  encodeSettings,
  encodeWindow,
  FrameDecoder,
} from '../protocol/frame.ts';
import { HttpResponseParser } from '../protocol/http-response.ts';
import { encodeUwsgiRequest, UwsgiRequestDecoder } from '../protocol/uwsgi.ts';
import { decodeVars, encodeVars } from '../protocol/vars.ts';

const dir = new URL('./vectors/', import.meta.url);
const files = readdirSync(dir).filter((f) => f.endsWith('.json'));

function decodeNative(bytes: Buffer): any[] {
  const frames: any[] = [];
  const decoder = new FrameDecoder(
    {
      onFrame(type, flags, streamId, payload) {
        const f: any = { type: FrameTypeName[type], flags, streamId };
        switch (type) {
          case FrameType.SETTINGS:
            f.settings = { ...(decodeSettings(payload) as object) };
            break;
          case FrameType.REQUEST:
            f.vars = decodeVars(payload);
            break;
          case FrameType.RESPONSE:
            f.status = payload.readUInt16LE(0);
            f.headers = decodeVars(payload, 2);
            break;
          case FrameType.DATA:
            f.data = payload.toString('latin1');
            break;
          case FrameType.RESET:
            f.code = ErrorCodeName[payload.readUInt32LE(0)];
            break;
          case FrameType.WINDOW:
            f.increment = payload.readUInt32LE(0);
            break;
          case FrameType.PING:
            f.opaque = payload.toString('hex');
            break;
          case FrameType.GOAWAY: {
            const g = decodeGoaway(payload);
            f.lastStreamId = g.lastStreamId;
            f.code = ErrorCodeName[g.code];
            f.debug = g.debug;
            break;
          }
        }
        frames.push(f);
      },
    },
    { expectPreface: bytes[0] === FrameType.SETTINGS },
  );
  assert.equal(decoder.push(bytes), null);
  assert.ok(decoder.idle, 'no partial frame left over');
  return frames;
}

function encodeNative(f: any): Buffer {
  const code = (name: string) => ErrorCode[name as keyof typeof ErrorCode];
  const end = (f.flags & 1) === 1;
  switch (f.type) {
    case 'SETTINGS':
      return encodeSettings(f.settings);
    case 'REQUEST':
      return encodeRequestFrame(f.streamId, f.vars, end, (f.flags & 4) === 4) as Buffer;
    case 'RESPONSE':
      return encodeResponseFrame(f.streamId, f.status, f.headers, end) as Buffer;
    case 'DATA':
      return encodeFrame(FrameType.DATA, f.flags, f.streamId, f.data === '' ? undefined : Buffer.from(f.data, 'latin1'));
    case 'RESET':
      return encodeReset(f.streamId, code(f.code));
    case 'WINDOW':
      return encodeWindow(f.streamId, f.increment);
    case 'PING':
      return encodePing(Buffer.from(f.opaque, 'hex'), (f.flags & 2) === 2);
    case 'GOAWAY':
      return encodeGoaway(f.lastStreamId, code(f.code), f.debug);
    default:
      throw new Error(`unknown frame type ${f.type}`);
  }
}

/** The serialisation the vectors use: status line (or CGI Status header), headers, blank line, body. */
function encodeHttpResponse(d: any): Buffer {
  let head = d.cgi ? `Status: ${d.status} ${d.reason}\r\n` : `HTTP/1.1 ${d.status} ${d.reason}\r\n`;
  for (let i = 0; i < d.headers.length; i += 2) head += `${d.headers[i]}: ${d.headers[i + 1]}\r\n`;
  return Buffer.concat([Buffer.from(`${head}\r\n`, 'latin1'), Buffer.from(d.body, 'latin1')]);
}

test('there are vectors for every format', () => {
  const formats = new Set(files.map((f) => JSON.parse(readFileSync(new URL(f, dir), 'utf8')).format));
  assert.deepEqual([...formats].sort(), ['http-response', 'native', 'uwsgi-request', 'vars']);
});

for (const file of files) {
  const vector = JSON.parse(readFileSync(new URL(file, dir), 'utf8'));
  test(`vector ${vector.name}: decodes to its description and re-encodes byte for byte`, () => {
    assert.equal(`${vector.name}.json`, file);
    const bytes = Buffer.from(vector.hex, 'hex');
    const d = vector.decoded;
    let again: Buffer;
    switch (vector.format) {
      case 'vars': {
        assert.deepEqual(decodeVars(bytes), d.vars);
        again = encodeVars(d.vars) as Buffer;
        break;
      }
      case 'native': {
        assert.deepEqual(decodeNative(bytes), d.frames);
        again = Buffer.concat(d.frames.map(encodeNative));
        break;
      }
      case 'uwsgi-request': {
        const got: any = { body: '' };
        let ended = false;
        const decoder = new UwsgiRequestDecoder({
          onRequest(vars, modifier1, modifier2) {
            Object.assign(got, { modifier1, modifier2, vars });
          },
          onBody: (c) => {
            got.body += c.toString('latin1');
          },
          onEnd: () => {
            ended = true;
          },
        });
        assert.equal(decoder.push(bytes), null);
        assert.ok(ended);
        assert.deepEqual(got, { modifier1: d.modifier1, modifier2: d.modifier2, vars: d.vars, body: d.body });
        again = Buffer.concat([encodeUwsgiRequest(d.vars, d.modifier1, d.modifier2) as Buffer, Buffer.from(d.body, 'latin1')]);
        break;
      }
      case 'http-response': {
        const got: any = { cgi: !bytes.subarray(0, 5).equals(Buffer.from('HTTP/')), body: '' };
        let ended = false;
        const parser = new HttpResponseParser({
          onHead(status, reason, headers) {
            Object.assign(got, { status, reason, headers });
          },
          onBody: (c) => {
            got.body += c.toString('latin1');
          },
          onEnd: () => {
            ended = true;
          },
        });
        const err = parser.push(bytes);
        assert.ok(!(err instanceof ProtocolError), String(err));
        assert.ok(ended);
        assert.deepEqual(got, { cgi: d.cgi, status: d.status, reason: d.reason, headers: d.headers, body: d.body });
        again = encodeHttpResponse(d);
        break;
      }
      default:
        assert.fail(`unknown format ${vector.format}`);
    }
    assert.equal(again.toString('hex'), vector.hex);
  });
}

test('PROTOCOL.md shows every vector', () => {
  const doc = readFileSync(new URL('../PROTOCOL.md', import.meta.url), 'utf8');
  for (const file of files) {
    const name = file.replace(/\.json$/, '');
    assert.ok(doc.includes(`vector \`${name}\``), `PROTOCOL.md does not show vector ${name}`);
  }
});
