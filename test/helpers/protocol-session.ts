// Helpers for the native session tests: a server that detects the protocol from
// the first bytes (as the appserver does) and hands native connections to a
// GatewireSession, clients over TCP or Unix sockets, and small stream utilities.
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import path from 'node:path';
import { Duplex } from 'node:stream';
import { FrameType } from '../../protocol/constants.ts';
import { decodeGoaway, encodeSettings, FrameDecoder, type GoawayInfo } from '../../protocol/frame.ts';
import { detectProtocol, type GatewireSession as Session, GatewireSession, type GatewireStream, type SessionOptions } from '../../protocol/session.ts';
import { tempDir } from './net.ts';

export interface TestServer {
  /** Where to connect: { port, host } for TCP or { path } for a Unix socket. */
  connectOpts: net.NetConnectOpts;
  sessions: Session[];
  /** Raw sockets accepted (native or not). */
  sockets: net.Socket[];
  close(): Promise<void>;
}

export async function startSessionServer(
  onStream: (stream: GatewireStream, session: Session) => void,
  opts: Omit<SessionOptions, 'role'> & { unix?: boolean; onSession?: (s: Session) => void } = {},
): Promise<TestServer> {
  const sessions: Session[] = [];
  const sockets: net.Socket[] = [];
  const server = net.createServer((socket) => {
    sockets.push(socket);
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const kind = detectProtocol(head);
      if (kind === 'need-more') return;
      socket.removeListener('data', onData);
      if (kind !== 'native') {
        socket.destroy();
        return;
      }
      const session = new GatewireSession(socket, { ...opts, role: 'server' }, head);
      session.on('error', () => {}); // tests observe errors through their own listeners
      session.on('stream', (stream: GatewireStream) => onStream(stream, session));
      sessions.push(session);
      opts.onSession?.(session);
    };
    socket.on('data', onData);
    socket.on('error', () => {});
  });
  let cleanup = () => {};
  let connectOpts: net.NetConnectOpts;
  if (opts.unix) {
    const t = tempDir('gws-');
    cleanup = t.cleanup;
    const sockPath = path.join(t.dir, 's.sock');
    server.listen(sockPath);
    await once(server, 'listening');
    connectOpts = { path: sockPath };
  } else {
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    connectOpts = { port: (server.address() as net.AddressInfo).port, host: '127.0.0.1' };
  }
  return {
    connectOpts,
    sessions,
    sockets,
    async close() {
      for (const s of sessions) s.destroy();
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      cleanup();
    },
  };
}

/** A client session over a fresh connection; resolves once the server's SETTINGS arrived. */
export async function connectClient(connectOpts: net.NetConnectOpts, opts: Omit<SessionOptions, 'role'> = {}): Promise<Session> {
  const socket = net.connect(connectOpts);
  const session = new GatewireSession(socket, { ...opts, role: 'client' });
  await withTimeout(once(session, 'ready'), 5000, 'client session ready');
  return session;
}

export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Reads a stream's readable side to its end. Not `for await`: Node's async
 * iterator destroys the whole Duplex at the end, which would RESET a stream
 * whose response is still to be written.
 */
export async function readAll(stream: GatewireStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream.iterator({ destroyOnReturn: false })) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

export function sha256(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

/** Writes `body` in pieces honouring backpressure, then ends. */
export async function writeBody(stream: GatewireStream, body: Buffer, piece = 16 * 1024): Promise<void> {
  for (let off = 0; off < body.length; off += piece) {
    if (!stream.write(body.subarray(off, off + piece))) await once(stream, 'drain');
  }
  stream.end();
}

/** Client side: the response head, then the whole body. */
export async function fetchOn(session: Session, vars: string[], body?: Buffer): Promise<{ status: number; headers: string[]; body: Buffer }> {
  const stream = session.request(vars, { endStream: body === undefined });
  const responded = once(stream, 'response') as Promise<[number, string[]]>;
  if (body !== undefined) void writeBody(stream, body).catch(() => {});
  const [status, headers] = await responded;
  return { status, headers, body: await readAll(stream) };
}

/**
 * An in-memory connected pair of Duplex streams (Node 20 has no
 * stream.duplexPair): proves the session only needs a Duplex, not a net.Socket.
 */
export function duplexPair(): [Duplex, Duplex] {
  let a!: Duplex;
  let b!: Duplex;
  const make = (peer: () => Duplex) =>
    new Duplex({
      read() {},
      write(chunk, _enc, cb) {
        peer().push(chunk);
        cb();
      },
      final(cb) {
        peer().push(null);
        cb();
      },
    });
  a = make(() => b);
  b = make(() => a);
  return [a, b];
}

export interface RawFrame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

/** A hand-driven peer on a raw socket: write any bytes, see every frame the other side sends and when it closes. */
export interface RawPeer {
  socket: net.Socket;
  frames: RawFrame[];
  /** Resolves once the other side has closed the connection. */
  closed: Promise<void>;
  send(...bufs: Buffer[]): void;
  /** Resolves with the first frame (already received or future) matching `pred`. */
  waitFrame(pred: (f: RawFrame) => boolean, timeoutMs?: number): Promise<RawFrame>;
}

export function rawPeer(socket: net.Socket): RawPeer {
  const frames: RawFrame[] = [];
  const waiters: Array<{ pred: (f: RawFrame) => boolean; resolve: (f: RawFrame) => void }> = [];
  const decoder = new FrameDecoder({
    onFrame(type, flags, streamId, payload) {
      const f = { type, flags, streamId, payload: Buffer.from(payload) };
      frames.push(f);
      for (let i = waiters.length - 1; i >= 0; i--) {
        if (waiters[i].pred(f)) {
          waiters[i].resolve(f);
          waiters.splice(i, 1);
        }
      }
    },
  });
  socket.on('data', (chunk: Buffer) => decoder.push(chunk));
  socket.on('error', () => {});
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return {
    socket,
    frames,
    closed,
    send(...bufs) {
      for (const b of bufs) socket.write(b);
    },
    waitFrame(pred, timeoutMs = 5000) {
      const found = frames.find(pred);
      if (found) return Promise.resolve(found);
      return withTimeout(new Promise<RawFrame>((resolve) => waiters.push({ pred, resolve })), timeoutMs, 'frame from the peer');
    },
  };
}

/** A raw client connection that has sent its SETTINGS preface. */
export async function rawClient(connectOpts: net.NetConnectOpts, settings = { maxConcurrentStreams: 100, initialStreamWindow: 65535, initialConnectionWindow: 1 << 20 }): Promise<RawPeer> {
  const socket = net.connect(connectOpts);
  await once(socket, 'connect');
  const peer = rawPeer(socket);
  peer.send(encodeSettings(settings));
  await peer.waitFrame((f) => f.type === FrameType.SETTINGS);
  return peer;
}

export function goawayOf(f: RawFrame): GoawayInfo {
  return decodeGoaway(f.payload);
}
