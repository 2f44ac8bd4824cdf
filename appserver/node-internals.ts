// Every private part of Node the appserver relies on, in one place: node:http's
// (checked when this module loads: a Node upgrade that changes one makes the
// worker refuse to start with a message naming it) and a socket's file
// descriptor (checked at the first connection, logged as an error if gone).
// test/appserver-private-internals-are-as-relied-on.test.ts fails either way:
// never a silent fall-back to a slower or subtly different path.
//
// Why rely on them at all: a Node (req, res) app such as Express needs the
// real IncomingMessage and ServerResponse (their implicit headers, HEAD/304
// rules, 'finish'/'close' order, pipe() backpressure). Node's own server feeds
// them from a socket through llhttp; the appserver has no HTTP socket, so it
// fills the request's header list directly and takes the response at the two
// points where Node hands it to the socket: `_storeHeader` (the head is
// rendered) and `_send` (a piece of body, the head first). Nothing is
// re-implemented: every public behaviour stays Node's.
import { readSync } from 'node:fs';
import { IncomingMessage, OutgoingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

export class NodeInternalsChanged extends Error {
  constructor(what: string) {
    super(`this Node.js (${process.version}) changed a private part of Node the appserver relies on: ${what}. Please report this with the Node version.`);
  }
}

type StoreHeader = (this: ServerResponse, firstLine: string, headers: unknown) => void;
type Send = (this: ServerResponse, data: string | Uint8Array, encoding: BufferEncoding | null | undefined, callback?: ((err?: Error | null) => void) | null) => boolean;

interface OutgoingPrivate {
  _storeHeader: StoreHeader;
  _send: Send;
  _header: string | null;
  _headerSent: boolean;
  chunkedEncoding: boolean;
}

const outgoingProto = OutgoingMessage.prototype as unknown as OutgoingPrivate;
const incomingProto = IncomingMessage.prototype as unknown as { _addHeaderLines?: (h: string[], n: number) => void };

if (typeof outgoingProto._storeHeader !== 'function') throw new NodeInternalsChanged('OutgoingMessage.prototype._storeHeader is gone');
if (typeof outgoingProto._send !== 'function') throw new NodeInternalsChanged('OutgoingMessage.prototype._send is gone');
if (typeof incomingProto._addHeaderLines !== 'function') throw new NodeInternalsChanged('IncomingMessage.prototype._addHeaderLines is gone');

/** Node's own _storeHeader: renders the head into `this._header` and decides the framing (chunkedEncoding). */
const nodeStoreHeader: StoreHeader = outgoingProto._storeHeader;
const addHeaderLines = incomingProto._addHeaderLines;

/** kNeedDrain: set by write() when it returned false; Node's server clears it when it emits 'drain'. */
const K_NEED_DRAIN = (() => {
  const probe = new ServerResponse(new IncomingMessage(null as never));
  const k = Object.getOwnPropertySymbols(probe).find((s) => s.description === 'kNeedDrain');
  if (k === undefined) throw new NodeInternalsChanged('ServerResponse has no Symbol(kNeedDrain)');
  return k;
})();

/** The request's raw header list, as Node's HTTP parser would set it (flat [name, value, ...]). */
export function setRawHeaders(req: IncomingMessage, raw: string[]): void {
  addHeaderLines!.call(req, raw, raw.length);
}

export interface ResponseOutput {
  /** The head is rendered: `this._header` holds Node's HTTP/1.1 head text, `this.statusCode` the status. */
  head(res: ServerResponse, headerText: string): void;
  /** A piece of body (maybe empty, maybe with a callback: end()'s last call carries the one that emits 'finish'). */
  send(res: ServerResponse, data: string | Uint8Array, encoding: BufferEncoding | null | undefined, callback: ((err?: Error | null) => void) | null | undefined): boolean;
}

const kOutput = Symbol('gatewire.responseOutput');
type Hooked = ServerResponse & OutgoingPrivate & { [kOutput]: ResponseOutput };

// Own properties of the response, not a subclass: Express replaces the prototype of every response it handles.
function storeHeader(this: Hooked, firstLine: string, headers: unknown): void {
  nodeStoreHeader.call(this, firstLine, headers);
  // The exchange frames the body itself: Node must not add chunk sizes.
  this.chunkedEncoding = false;
}

function send(this: Hooked, data: string | Uint8Array, encoding: BufferEncoding | null | undefined | ((err?: Error | null) => void), callback?: ((err?: Error | null) => void) | null): boolean {
  if (typeof encoding === 'function') {
    callback = encoding;
    encoding = null;
  }
  const out = this[kOutput];
  if (!this._headerSent && this._header !== null) {
    this._headerSent = true;
    out.head(this, this._header);
  }
  return out.send(this, data, encoding, callback);
}

/** Routes everything `res` would write to its socket to `output` instead, as a head and body pieces. */
export function routeResponse(res: ServerResponse, output: ResponseOutput): void {
  const r = res as Hooked;
  r[kOutput] = output;
  r._storeHeader = storeHeader as unknown as StoreHeader;
  r._send = send as Send;
}

/** The output routeResponse() gave `res`. */
export function responseOutput(res: ServerResponse): ResponseOutput {
  return (res as Hooked)[kOutput];
}

/** Emits 'drain' on `res` if a write() returned false since the last one, as Node's server does. */
export function emitDrainIfNeeded(res: ServerResponse): void {
  const r = res as unknown as Record<symbol, boolean>;
  if (r[K_NEED_DRAIN] && !res.writableFinished) {
    r[K_NEED_DRAIN] = false;
    res.emit('drain');
  }
}

// Reading what an accepted connection already holds, at once.
//
// A uwsgi front (NGINX uwsgi_pass, Apache) opens a connection per request and
// writes the request right after connect(): by the time the worker accepts, it
// is waiting in the socket. Node would first register the socket with epoll
// and read it on the next turn of the event loop: an epoll_ctl (io_uring_enter)
// and an epoll_wait per request, and the socket still in epoll when it is
// closed. Reading it right away, as uWSGI does, answers a request whose app
// responds synchronously within the accept: its socket never reaches epoll
// (kernel CPU per hello request 12 → 8 µs). Node has no public way to read a
// socket synchronously; its handle's `fd` is the one private part used.

/** One read's worth; the bytes are copied out (pooled when small), the scratch never escapes. */
const SCRATCH = Buffer.allocUnsafeSlow(64 * 1024);

interface HandleWithFd {
  fd?: unknown;
}

/**
 * The file descriptor of a socket's libuv handle, or -1 when it has none (no
 * handle: a socket not from a listener; closed). Throws NodeInternalsChanged
 * when a handle no longer has a numeric `fd`.
 */
export function socketFd(socket: Socket): number {
  const handle = (socket as unknown as { _handle: HandleWithFd | null })._handle;
  if (handle === null || handle === undefined) return -1;
  const fd = handle.fd;
  if (typeof fd !== 'number') throw new NodeInternalsChanged("a socket's handle has no numeric 'fd'");
  return fd;
}

/**
 * The bytes waiting in `socket` right now, or null when there are none (or on
 * an error or EOF: libuv meets those again on its own read and reports them
 * as usual). Never blocks: accepted sockets are non-blocking.
 */
export function readWaiting(fd: number): Buffer | null {
  let n: number;
  // EAGAIN (nothing there yet) is thrown: the stack trace nobody reads is not built.
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    n = readSync(fd, SCRATCH, 0, SCRATCH.length, null);
  } catch {
    return null;
  } finally {
    Error.stackTraceLimit = limit;
  }
  return n > 0 ? Buffer.from(SCRATCH.subarray(0, n)) : null;
}
