// Upstreams that lie: a raw TCP server that pretends to speak HTTP/1.1 and one
// that pretends to speak uwsgi, each answering a request path with scripted
// bytes (an invalid status, CR/LF in a header, a Content-Length that lies...).
// Hand-written on purpose: no library would produce these responses.
import net from 'node:net';
import type { TestContext } from 'node:test';

export interface Misbehaviour {
  /** Raw bytes written as the response. */
  bytes: string;
  /** After writing: close the connection, keep it (HTTP keep-alive), or go silent (read timeout). */
  after: 'close' | 'keep' | 'hang';
}

export const FINE: Misbehaviour = { bytes: 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nfine', after: 'keep' };

/** What a lying upstream answers, by request path. `expect` is what the client may see. */
export const MISBEHAVIOURS: Record<string, Misbehaviour & { expect: '502' | '504' | '502-or-truncated' | 'fine-or-502' }> = {
  '/status-not-a-number': { bytes: 'HTTP/1.1 abc Broken\r\nContent-Length: 0\r\n\r\n', after: 'keep', expect: '502' },
  '/status-1000': { bytes: 'HTTP/1.1 1000 Too Big\r\nContent-Length: 0\r\n\r\n', after: 'keep', expect: '502' },
  '/status-99': { bytes: 'HTTP/1.1 099 Too Small\r\nContent-Length: 0\r\n\r\n', after: 'keep', expect: '502' },
  '/not-http-at-all': { bytes: 'SSH-2.0-OpenSSH_9.2\r\n\r\n', after: 'close', expect: '502' },
  '/cr-in-header': { bytes: 'HTTP/1.1 200 OK\r\nX-Evil: a\rSet-Cookie: pwned=1\r\nContent-Length: 4\r\n\r\nfine', after: 'keep', expect: '502' },
  // RFC 9112 §2.2 lets a recipient take a bare LF for a line end: two clean headers, or a 502; never a raw LF
  '/lf-in-header': { bytes: 'HTTP/1.1 200 OK\r\nX-Evil: a\nX-Split: b\r\nContent-Length: 4\r\n\r\nfine', after: 'keep', expect: 'fine-or-502' },
  '/nul-in-header': { bytes: 'HTTP/1.1 200 OK\r\nX-Evil: a\0pwned\r\nContent-Length: 4\r\n\r\nfine', after: 'keep', expect: '502' },
  '/space-in-header-name': { bytes: 'HTTP/1.1 200 OK\r\nX Evil: pwned\r\nContent-Length: 4\r\n\r\nfine', after: 'keep', expect: '502' },
  '/two-content-lengths': { bytes: 'HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 11\r\n\r\nfine, pwned', after: 'keep', expect: '502' },
  '/content-length-and-chunked': {
    bytes: 'HTTP/1.1 200 OK\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\npwned\r\n0\r\n\r\n',
    after: 'keep',
    expect: '502',
  },
  '/content-length-not-a-number': { bytes: 'HTTP/1.1 200 OK\r\nContent-Length: 4x\r\n\r\nfine', after: 'keep', expect: '502' },
  '/bad-chunk-size': { bytes: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\npwned\r\n0\r\n\r\n', after: 'keep', expect: '502-or-truncated' },
  // announced 100 bytes, sent 10, then closed: the client must see a truncated response, never a clean short one
  '/content-length-longer-then-close': { bytes: 'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b', after: 'close', expect: '502-or-truncated' },
  // announced 100 bytes, sent 10, then silent: cut at the read timeout
  '/content-length-longer-then-hang': { bytes: 'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b', after: 'hang', expect: '502-or-truncated' },
  // larger than announced: the extra bytes must reach no client (not this one, not the next request's)
  '/larger-than-announced': {
    bytes: 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nfineHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\npwned',
    after: 'keep',
    expect: 'fine-or-502',
  },
  // a head that never completes is a silent upstream: 504 at the read timeout, as NGINX does
  '/head-never-ends': { bytes: 'HTTP/1.1 200 OK\r\nX-Slow: 1\r\n', after: 'hang', expect: '504' },
};

function script(path: string): Misbehaviour {
  return (MISBEHAVIOURS as Record<string, Misbehaviour>)[path] ?? FINE;
}

function serve(t: TestContext, onConnection: (sock: net.Socket) => void): Promise<{ address: string; connections: () => number }> {
  const sockets = new Set<net.Socket>();
  let count = 0;
  const server = net.createServer((sock) => {
    count++;
    sockets.add(sock);
    sock.on('error', () => {});
    sock.once('close', () => sockets.delete(sock));
    onConnection(sock);
  });
  t.after(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      resolve({ address: `127.0.0.1:${port}`, connections: () => count });
    });
  });
}

function act(sock: net.Socket, m: Misbehaviour): void {
  sock.write(Buffer.from(m.bytes, 'latin1'));
  if (m.after === 'close') sock.end();
}

/** A TCP server that reads HTTP/1.1 request heads (no bodies) and answers each with its script. */
export function startLyingHttpUpstream(t: TestContext): Promise<{ address: string; connections: () => number }> {
  return serve(t, (sock) => {
    let buf = '';
    let hung = false;
    sock.on('data', (d: Buffer) => {
      if (hung) return;
      buf += d.toString('latin1');
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.slice(0, end);
        buf = buf.slice(end + 4);
        const target = head.split(' ')[1] ?? '/';
        const m = script(target.split('?')[0]);
        act(sock, m);
        if (m.after !== 'keep') {
          hung = true;
          return;
        }
      }
    });
  });
}

/** A TCP server that reads one uwsgi request packet (vars only) and answers with its script, as uWSGI would. */
export function startLyingUwsgiUpstream(t: TestContext): Promise<{ address: string; connections: () => number }> {
  return serve(t, (sock) => {
    let buf = Buffer.alloc(0);
    let answered = false;
    sock.on('data', (d: Buffer) => {
      if (answered) return;
      buf = Buffer.concat([buf, d]);
      if (buf.length < 4) return;
      const size = buf.readUInt16LE(1);
      if (buf.length < 4 + size) return;
      answered = true;
      // vars: (u16le key length, key, u16le value length, value)*
      let off = 4;
      let uri = '/';
      while (off < 4 + size) {
        const kl = buf.readUInt16LE(off);
        const key = buf.toString('latin1', off + 2, off + 2 + kl);
        off += 2 + kl;
        const vl = buf.readUInt16LE(off);
        const value = buf.toString('latin1', off + 2, off + 2 + vl);
        off += 2 + vl;
        if (key === 'REQUEST_URI') uri = value;
      }
      const m = script(uri.split('?')[0]);
      // uwsgi carries one request per connection: "keep" means the response ends when the upstream closes
      act(sock, m.after === 'keep' ? { ...m, after: 'close' } : m);
    });
  });
}
