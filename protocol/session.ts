// The gatewire native session: multiplexed streams over one socket, with
// per-stream and per-connection flow control, PING and GOAWAY, implementing
// the session contract below (PROTOCOL.md documents the wire rules).
//
// Hand-written because it is the protocol itself: HTTP/2 libraries cannot speak
// our frames. The shape follows Node's http2 core (a session EventEmitter that
// owns the socket, Duplex streams) and its flow-control policy: connection
// credit is returned as bytes arrive, stream credit only once the application
// has consumed them, so a slow reader stalls its own stream and nothing else.
//
// Beyond the plain contract (additive, no deviation in names or semantics):
// - client streams expose `status` and `headers` once 'response' was emitted;
// - every stream keeps `resetError` (the StreamResetError that ended it, if any);
// - a StreamResetError is not emitted as 'error' on a stream that has no 'error'
//   listener (it stays in `resetError`, 'aborted' and 'close' are still emitted),
//   and the session emits 'error' only when someone listens: an unhandled peer
//   RESET or connection failure can never crash the process;
// - the session emits 'error' for socket errors too (not only ProtocolError),
//   and only when someone listens;
// - request() beyond the peer's max concurrent streams fails the stream at once
//   with a retryable local REFUSED_STREAM (it is not queued); before the peer's
//   SETTINGS arrive, requests are queued and availableStreams assumes the
//   protocol default limit;
// - a server stream whose response has ended while the request body is still
//   arriving sends RESET(CANCEL) (the client then stops sending: its pending
//   writes complete without error) and an unconsumed request body is dumped so
//   the stream still reaches 'close' — Node's http does the same with req._dump().
// - upgrade streams (PROTOCOL.md 4.3): request(vars, { upgrade: true }) sends
//   REQUEST with the UPGRADE flag; a 101 RESPONSE makes the stream a tunnel
//   (`stream.tunnel`), whose two directions end independently (no RESET(CANCEL)
//   when the server's side ends first) and whose DATA is no request body
//   (maxRequestBody does not apply). Flow control is the same as for any stream.
//
// Rules worth knowing when coding against it:
// - DATA after END_STREAM on a still-active stream is a STREAM error (RESET
//   STREAM_CLOSED) — not a connection error; frames for
//   streams already closed are ignored (their bytes still count against, and
//   return, connection credit).
// - `for await (const c of stream)` destroys the whole Duplex when the body ends
//   (Node's iterator semantics), which RESETs a stream whose response is not
//   written yet: use stream.iterator({ destroyOnReturn: false }), 'data'/'end',
//   or pipe.
// - Stream credit is returned when bytes are emitted as 'data' (flowing mode,
//   pipe, read() and async iteration all do), or as they are decoded for a body
//   taken whole (takeBody), batched at half the initial stream window;
//   connection credit on receipt, batched at half its window.
// - Body bytes reach their streams once the whole socket read is decoded, as
//   views into the read (never copied; a DATA payload split across two reads
//   is two views, FrameDecoder never assembles it), in wire order per stream;
//   a stream's END_STREAM comes after its bytes of that read.
// - Sockets get setNoDelay(true): frames are batched per event-loop iteration by
//   cork/uncork (flushed in the check phase, after the read burst), except a
//   streamed chunk of BULK_CHUNK_BYTES or more and a cork past CORK_LIMIT, which
//   leave at once.
//
// Hot spots (measured by the protocol benchmark, not here): onFrame's switch,
// one 8-byte header allocation per DATA frame (from Buffer's pool), one cork per
// loop iteration, the 'data' emit override that counts consumed bytes.
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import {
  DEFAULT_INITIAL_STREAM_WINDOW,
  DEFAULT_MAX_CONCURRENT_STREAMS,
  ErrorCode,
  ErrorCodeName,
  Flag,
  FrameType,
  MAX_FRAME_PAYLOAD,
  MAX_STREAM_ID,
  MAX_WINDOW,
  PING_PAYLOAD_SIZE,
  PREFACE_DETECT_SIZE,
  PREFACE_MAGIC,
} from './constants.ts';
import { ProtocolError, protocolError } from './errors.ts';
import {
  decodeGoaway,
  decodeSettings,
  encodeDataHeader,
  encodeGoaway,
  encodePing,
  encodeRequestFrame,
  encodeReset,
  encodeResponseFrame,
  encodeSettings,
  encodeWindow,
  FrameDecoder,
  type FrameSink,
  type GoawayInfo,
  type Settings,
} from './frame.ts';
import { StreamTable } from './stream-table.ts';
import { decodeVars, type Vars } from './vars.ts';

export type { GoawayInfo, Settings } from './frame.ts';

export interface SessionOptions {
  role: 'client' | 'server';
  /** Streams we accept (server) — default DEFAULT_MAX_CONCURRENT_STREAMS. */
  maxConcurrentStreams?: number;
  /** Our receive window per stream — default DEFAULT_INITIAL_STREAM_WINDOW for a client, 1 MiB for a server (request bodies). */
  initialStreamWindow?: number;
  /** Our receive window for the whole connection — default 16 MiB (announced in SETTINGS). */
  initialConnectionWindow?: number;
  /** 0/undefined = no automatic pings. */
  pingIntervalMs?: number;
  /** A PING without ACK for this long destroys the session — default 10_000. */
  pingTimeoutMs?: number;
  /** Server: a stream whose received DATA exceeds this gets RESET(BODY_TOO_LARGE). */
  maxRequestBody?: number;
}

/** Receive windows announced when the caller sets none (see the constructor). */
const LOCAL_SERVER_STREAM_WINDOW = 1024 * 1024;
/**
 * Bytes a server may leave queued on its socket after a write before it stops handing the socket
 * DATA (a client stops at any). A server answers with whole bodies: stopped at the socket's own
 * 16 KiB, a 64 KiB body left as two writes a loop iteration apart (its second frame waited for
 * 'drain'), so the proxy got it in two reads and wrote it to its client in two.
 */
export const SERVER_SOCKET_HIGH_WATER = 256 * 1024;
/**
 * Frames are corked until the end of the poll phase (one writev for every request of a read
 * burst), but no more than this many bytes: past it they are written at once. It bounds what a
 * session holds in user space between two write attempts.
 */
const CORK_LIMIT = 256 * 1024;
/**
 * A cork that holds this many bytes leaves before the next stream's frames join it. One writev
 * per poll phase made the proxy and the worker take turns: the proxy corked a whole burst of
 * requests, the worker answered all of them in one cork, and each side waited for the other's
 * batch (Express item through `gatewire proxy` → `gatewire serve`, wrk -c64: 27–34 % of both
 * cores idle, against 12–15 % for the reply-from peer). Batches of about 2 KiB, cut only between
 * two streams' frames (a 64 KiB response still leaves whole): 9–12 % idle, 23.6–28.2k against
 * 16.9–21.8k req/s, proxy CPU 34–40 against 36–49 µs per request (4 interleaved rounds). 4 KiB
 * left 18–21 % idle, 8 KiB as before.
 */
const CORK_BATCH_BYTES = 2 * 1024;
/**
 * A streamed chunk this large leaves as soon as its frames are written, not at the end of the poll
 * phase. An upload the proxy relays comes as 64 KiB socket reads: corked until the check phase,
 * a burst of them from many clients outgrew the CPU cache before writev copied them into the
 * socket (perf: that copy was 24 % of the proxy on 1 MiB uploads, the peer's 2 % for the same
 * bytes written where they were read).
 */
const BULK_CHUNK_BYTES = 16 * 1024;
const LOCAL_CONNECTION_WINDOW = 16 * 1024 * 1024;

/** How long a closing socket may take to flush before it is destroyed. */
const CLOSE_GRACE_MS = 2000;

/**
 * Tells a native connection from a uwsgi classic one by its first bytes: a
 * native client starts with a SETTINGS frame (type 0x01) whose payload begins
 * with "GWIR" at byte 8.
 */
export function detectProtocol(head: Buffer): 'native' | 'uwsgi' | 'need-more' {
  if (head.length === 0) return 'need-more';
  if (head[0] !== FrameType.SETTINGS) return 'uwsgi';
  if (head.length < PREFACE_DETECT_SIZE) return 'need-more';
  return head[8] === PREFACE_MAGIC[0] && head[9] === PREFACE_MAGIC[1] && head[10] === PREFACE_MAGIC[2] && head[11] === PREFACE_MAGIC[3]
    ? 'native'
    : 'uwsgi';
}

/**
 * Why a stream ended abnormally. `retryable` is true when the server has
 * certainly not processed the request: REFUSED_STREAM, a stream above the
 * peer's GOAWAY last stream id, or a REQUEST that was never written.
 */
export class StreamResetError extends Error {
  readonly code: number;
  readonly codeName: string;
  /** True when the peer sent the RESET (or GOAWAY) that ended the stream. */
  readonly remote: boolean;
  readonly retryable: boolean;
  readonly streamId: number;
  constructor(code: number, message: string, opts: { remote: boolean; retryable: boolean; streamId: number; cause?: unknown }) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'StreamResetError';
    this.code = code;
    this.codeName = ErrorCodeName[code] ?? `UNKNOWN_${code}`;
    this.remote = opts.remote;
    this.retryable = opts.retryable;
    this.streamId = opts.streamId;
  }
}

interface PendingPing {
  id: number;
  start: number;
  resolve: (rtt: number) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

type WriteCallback = (err?: Error | null) => void;

/** Receives body bytes [start, end) of `chunk`, valid during the call only (the chunk may be a reused read buffer). */
export type BodySink = (chunk: Buffer, start: number, end: number) => void;

// Module-level callbacks so that nextTick/timers allocate no closure.
function uncorkSession(s: GatewireSession): void {
  s._flushNow();
}
function pingIntervalTick(s: GatewireSession): void {
  s._pingTick();
}
function pingTimedOut(s: GatewireSession): void {
  s.destroy(new ProtocolError(ErrorCode.TIMEOUT, 'no PING acknowledgement within the ping timeout'));
}
function forceCloseSocket(socket: Duplex): void {
  socket.destroy();
}
function startSession(s: GatewireSession): void {
  s._start();
}
function failLater(stream: GatewireStream, err: StreamResetError): void {
  stream._abort(err, false);
}

export class GatewireSession extends EventEmitter implements FrameSink {
  readonly role: 'client' | 'server';
  private readonly socket: Duplex;
  private readonly decoder: FrameDecoder;
  private readonly localMaxStreams: number;
  private readonly localStreamWindow: number;
  private readonly localConnWindow: number;
  private readonly pingTimeoutMs: number;
  private readonly maxRequestBody: number;

  private _ready = false;
  private _peerSettings: Settings | null = null;
  private _goingAway = false;
  private _destroyed = false;
  private socketClosed = false;
  private socketEnded = false;
  private hadError = false;
  private goawaySent = false;
  private goawayReceived: GoawayInfo | null = null;

  /** Streams open on the wire (REQUEST sent/received and not yet closed). */
  private readonly streams = new StreamTable<GatewireStream>();
  /** Client: streams created before the server's SETTINGS, in id order. */
  private pendingOpen: GatewireStream[] = [];
  private nextStreamId = 1;
  /** Client: highest id whose REQUEST was written. Server: highest REQUEST id received. */
  private lastStreamId = 0;

  // Sending: credit the peer granted us.
  private connSendWindow = 0;
  private peerStreamWindow = DEFAULT_INITIAL_STREAM_WINDOW;
  /**
   * Streams with data waiting for connection credit or socket drain, in the order they stalled; a
   * stream is in it while its `_blocked` is set (an array and a flag, not a Set: see
   * stream-table.ts for what a long-lived Set churned per write stall costs the GC).
   */
  private blocked: GatewireStream[] = [];
  private socketBlocked = false;
  private corked = false;
  /** Bytes written since the cork began, and the stream whose frames were written last. */
  private corkedBytes = 0;
  private corkStream = -1;
  /** The queued bytes at which a write marks the socket blocked (write() says false from its own 16 KiB on). */
  private readonly socketHighWater: number;

  // Receiving: credit we granted the peer.
  private connRecvWindow: number;
  private connCreditOwed = 0;
  private readonly connCreditThreshold: number;
  private readonly streamCreditThreshold: number;

  private pings: PendingPing[] = [];
  private pingSeq = 0;
  private pingTimer: NodeJS.Timeout | null = null;
  private receivedSinceTick = false;
  private closeTimer: NodeJS.Timeout | null = null;
  /** Chunks that arrived before the first tick (so 'stream' is never emitted inside the constructor). */
  private startQueue: Buffer[] | null = [];
  /** The chunk being decoded; the DATA pieces of streams in rxWaiting are ranges of it. */
  private rxChunk: Buffer = EMPTY;
  /** Streams with body bytes in rxChunk not yet delivered. */
  private readonly rxWaiting: GatewireStream[] = [];
  /** Where the payload pieces of the DATA frame being decoded go (null: dropped). */
  private rxStream: GatewireStream | null = null;
  /** The DATA frame being decoded carries END_STREAM. */
  private rxEnd = false;

  private readonly onSocketData: (chunk: Buffer) => void;
  private readonly onSocketDrain: () => void;
  private readonly onSocketEnd: () => void;
  private readonly onSocketError: (err: Error) => void;
  private readonly onSocketClose: () => void;

  constructor(socket: Duplex, opts: SessionOptions, head?: Buffer) {
    super();
    this.role = opts.role;
    this.socket = socket;
    this.localMaxStreams = opts.maxConcurrentStreams ?? DEFAULT_MAX_CONCURRENT_STREAMS;
    this.socketHighWater = opts.role === 'server' ? SERVER_SOCKET_HIGH_WATER : 0;
    // What we announce in SETTINGS when the caller does not choose: a server takes request bodies
    // a whole MiB per stream before it returns credit (a 1 MiB upload then never stalls on a window
    // round trip), and both sides give the connection room for many such streams at once. The
    // protocol defaults stay what a peer assumes before our SETTINGS arrive.
    this.localStreamWindow = Math.min(opts.initialStreamWindow ?? (opts.role === 'server' ? LOCAL_SERVER_STREAM_WINDOW : DEFAULT_INITIAL_STREAM_WINDOW), MAX_WINDOW);
    this.localConnWindow = Math.min(opts.initialConnectionWindow ?? LOCAL_CONNECTION_WINDOW, MAX_WINDOW);
    this.pingTimeoutMs = opts.pingTimeoutMs ?? 10_000;
    this.maxRequestBody = opts.maxRequestBody ?? Number.POSITIVE_INFINITY;
    this.connRecvWindow = this.localConnWindow;
    this.connCreditThreshold = Math.max(1, this.localConnWindow >>> 1);
    this.streamCreditThreshold = Math.max(1, this.localStreamWindow >>> 1);
    this.decoder = new FrameDecoder(this);

    this.onSocketData = (chunk) => {
      if (this.startQueue !== null) this.startQueue.push(chunk);
      else this.receive(chunk);
    };
    this.onSocketDrain = () => {
      this.socketBlocked = false;
      this.flushBlocked();
    };
    this.onSocketEnd = () => {
      if (!this._destroyed) this.teardown(new Error('the peer closed the connection'), false);
      this.endSocket();
    };
    this.onSocketError = (err) => {
      if (this._destroyed) return;
      this.hadError = true;
      this.emitError(err);
      this.teardown(err, false);
    };
    this.onSocketClose = () => this.socketClosedNow();

    // We batch frames ourselves (cork per tick); Nagle would hold small WINDOW/PING frames back for a delayed ACK.
    const tcp = socket as Partial<Socket>;
    if (typeof tcp.setNoDelay === 'function') tcp.setNoDelay(true);
    socket.on('data', this.onSocketData);
    socket.on('drain', this.onSocketDrain);
    socket.on('end', this.onSocketEnd);
    socket.on('error', this.onSocketError);
    socket.on('close', this.onSocketClose);
    if (head !== undefined && head.length > 0) this.startQueue!.push(head);
    socket.resume();

    this.writeFrame(
      encodeSettings({
        maxConcurrentStreams: this.localMaxStreams,
        initialStreamWindow: this.localStreamWindow,
        initialConnectionWindow: this.localConnWindow,
      }),
    );
    if (opts.pingIntervalMs !== undefined && opts.pingIntervalMs > 0) {
      this.pingTimer = setInterval(pingIntervalTick, opts.pingIntervalMs, this);
      this.pingTimer.unref();
    }
    process.nextTick(startSession, this);
  }

  // ------------------------------------------------------------ public state

  get ready(): boolean {
    return this._ready;
  }
  get peerSettings(): Settings | null {
    return this._peerSettings;
  }
  get activeStreams(): number {
    return this.streams.size + this.pendingOpen.length;
  }
  get goingAway(): boolean {
    return this._goingAway;
  }
  get destroyed(): boolean {
    return this._destroyed;
  }
  get availableStreams(): number {
    if (this._destroyed || this._goingAway) return 0;
    const max = this.role === 'client' ? (this._peerSettings?.maxConcurrentStreams ?? DEFAULT_MAX_CONCURRENT_STREAMS) : this.localMaxStreams;
    return Math.max(0, max - this.activeStreams);
  }

  // ------------------------------------------------------------ public API

  /** Client: opens a stream. Never throws; a stream that cannot be opened errors asynchronously. */
  request(vars: Vars, opts?: { endStream?: boolean; upgrade?: boolean }): GatewireStream {
    // An upgrade stream keeps the client's direction open for the tunnel: it never starts with END_STREAM.
    const upgrade = opts?.upgrade === true;
    const endStream = !upgrade && opts?.endStream === true;
    const id = this.nextStreamId <= MAX_STREAM_ID ? this.nextStreamId++ : MAX_STREAM_ID;
    const stream = new GatewireStream(this, id, vars, endStream);
    stream._upgrade = upgrade;
    if (this.role !== 'client') {
      return this.refuseLater(stream, ErrorCode.PROTOCOL_ERROR, 'only a client session opens streams', false);
    }
    if (this._destroyed || this._goingAway || id >= MAX_STREAM_ID) {
      if (id >= MAX_STREAM_ID && !this._goingAway) this.goaway();
      return this.refuseLater(stream, ErrorCode.REFUSED_STREAM, 'the session is closing: open the stream on another connection', true);
    }
    const frame = encodeRequestFrame(id, vars, endStream, upgrade);
    if (frame instanceof ProtocolError) return this.refuseLater(stream, frame.code, frame.message, false);
    stream._requestFrame = frame;
    if (endStream) stream._localEnded = true;
    if (this._ready) this.openStream(stream);
    else this.pendingOpen.push(stream);
    return stream;
  }

  /** Resolves with the round-trip time in ms; rejects if the session closes first. A missing ACK destroys the session after pingTimeoutMs. */
  ping(): Promise<number> {
    if (this._destroyed) return Promise.reject(new Error('the session is closed'));
    return new Promise<number>((resolve, reject) => {
      const id = (this.pingSeq = (this.pingSeq + 1) >>> 0);
      const opaque = Buffer.alloc(PING_PAYLOAD_SIZE);
      opaque.writeUInt32LE(id, 0);
      const timer = setTimeout(pingTimedOut, this.pingTimeoutMs, this);
      timer.unref();
      this.pings.push({ id, start: performance.now(), resolve, reject, timer });
      this.writeFrame(encodePing(opaque, false));
    });
  }

  /** Graceful shutdown: no new streams, finish the active ones, close the socket once idle. */
  goaway(code: number = ErrorCode.NO_ERROR, debug = ''): void {
    if (this._destroyed || this.goawaySent) return;
    this.goawaySent = true;
    this._goingAway = true;
    this.writeFrame(encodeGoaway(this.role === 'server' ? this.lastStreamId : 0, code, debug));
    if (this.pendingOpen.length > 0) this.failPending('the session is closing: open the stream on another connection');
    this.maybeCloseIdle();
  }

  /** goaway() and resolve once the socket is closed. */
  close(): Promise<void> {
    if (this.socketClosed) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.once('close', () => resolve());
      this.goaway();
    });
  }

  /** Abort now: every active stream is destroyed with an error. */
  destroy(err?: Error): void {
    if (this._destroyed) {
      this.socket.destroy();
      return;
    }
    if (err !== undefined) {
      this.hadError = true;
      this.emitError(err);
    }
    this.teardown(err ?? new Error('the session was destroyed'), false);
    this.socket.destroy();
  }

  // ------------------------------------------------------------ receiving

  /** @internal first tick: feed what arrived (and the detection head) to the decoder. */
  _start(): void {
    const queue = this.startQueue!;
    this.startQueue = null;
    for (let i = 0; i < queue.length && !this._destroyed; i++) this.receive(queue[i]);
  }

  private receive(chunk: Buffer): void {
    if (this._destroyed) return;
    this.receivedSinceTick = true;
    this.rxChunk = chunk;
    try {
      const err = this.decoder.push(chunk);
      // The body bytes of this chunk go to their streams before a connection error tears them down (the order of the wire).
      this.flushReceived();
      if (err !== null && !this._destroyed) this.connectionError(err);
    } catch (cause) {
      // A throwing event handler must not escape a socket callback: it ends this connection only.
      const err = new ProtocolError(ErrorCode.INTERNAL_ERROR, `internal error: ${(cause as Error)?.message ?? cause}`);
      (err as { cause?: unknown }).cause = cause;
      if (this.listenerCount('error') === 0) process.emitWarning(`gatewire session: ${(cause as Error)?.stack ?? cause}`);
      this.connectionError(err);
    } finally {
      // After a throw, what was not delivered is dropped (the connection is failing): nothing may point into `chunk` now.
      const waiting = this.rxWaiting;
      for (let i = 0; i < waiting.length; i++) waiting[i]._rxRanges = null;
      waiting.length = 0;
      this.rxChunk = EMPTY;
    }
  }

  /**
   * Hands every stream the body bytes this chunk carried for it: views into the socket's chunk
   * (no copy), or, for a stream whose body is taken whole, straight to its sink without a chunk,
   * a 'data' event or readable buffering each. A payload split across two reads is two views,
   * never assembled.
   */
  private flushReceived(): void {
    const waiting = this.rxWaiting;
    for (let i = 0; i < waiting.length; i++) this.deliverReceived(waiting[i]);
    waiting.length = 0;
  }

  private deliverReceived(stream: GatewireStream): void {
    const ranges = stream._rxRanges;
    if (ranges === null) return;
    const count = ranges.length;
    const total = stream._rxBytes;
    stream._rxRanges = null;
    stream._rxBytes = 0;
    // Destroyed, or its body cut short by a response that ended first (_afterLocalEnd): the bytes are dropped.
    if (stream.destroyed || stream._remoteEnded) return;
    const chunk = this.rxChunk;
    const sink = stream._bodySink;
    if (sink !== null) {
      for (let i = 0; i < count; i += 2) sink(chunk, ranges[i], ranges[i + 1]);
      this._consumed(stream, total);
      return;
    }
    for (let i = 0; i < count; i += 2) stream.push(chunk.subarray(ranges[i], ranges[i + 1]));
  }

  /** @internal FrameSink: one decoded frame (shape already checked by FrameDecoder). */
  onFrame(type: number, flags: number, streamId: number, payload: Buffer): void {
    switch (type) {
      case FrameType.WINDOW:
        this.onWindow(streamId, payload.readUInt32LE(0));
        return;
      case FrameType.REQUEST:
        this.onRequest(flags, streamId, payload);
        return;
      case FrameType.RESPONSE:
        this.onResponse(flags, streamId, payload);
        return;
      case FrameType.RESET:
        this.onReset(streamId, payload.readUInt32LE(0));
        return;
      case FrameType.PING:
        if (flags & Flag.ACK) {
          this.onPingAck(payload);
          return;
        }
        this.writeFrame(encodePing(payload, true));
        return;
      case FrameType.SETTINGS:
        this.onSettings(payload);
        return;
      case FrameType.GOAWAY:
        this.onGoaway(decodeGoaway(payload));
        return;
    }
  }

  private onSettings(payload: Buffer): void {
    const settings = decodeSettings(payload);
    if (settings instanceof ProtocolError) {
      this.connectionError(settings); // FrameDecoder already checked it: defensive
      return;
    }
    this._peerSettings = settings;
    this._ready = true;
    this.connSendWindow = settings.initialConnectionWindow;
    this.peerStreamWindow = settings.initialStreamWindow;
    const pending = this.pendingOpen;
    this.pendingOpen = [];
    for (let i = 0; i < pending.length; i++) this.openStream(pending[i]);
    this.emit('ready', settings);
  }

  private onRequest(flags: number, id: number, payload: Buffer): void {
    if (this.role !== 'server') {
      this.connectionError(protocolError('PROTOCOL_ERROR', 'a server sent REQUEST', id));
      return;
    }
    if (id <= this.lastStreamId) {
      this.connectionError(protocolError('PROTOCOL_ERROR', `stream id ${id} is not above the last one (${this.lastStreamId})`, id));
      return;
    }
    this.lastStreamId = id;
    if (this._goingAway || this.streams.size >= this.localMaxStreams) {
      this.writeFrame(encodeReset(id, ErrorCode.REFUSED_STREAM));
      return;
    }
    if ((flags & (Flag.UPGRADE | Flag.END_STREAM)) === (Flag.UPGRADE | Flag.END_STREAM)) {
      this.writeFrame(encodeReset(id, ErrorCode.PROTOCOL_ERROR)); // an upgrade with no client direction left to tunnel
      return;
    }
    const vars = decodeVars(payload);
    if (vars instanceof ProtocolError) {
      this.connectionError(new ProtocolError(vars.code, vars.message, id));
      return;
    }
    const stream = new GatewireStream(this, id, vars);
    if (flags & Flag.UPGRADE) stream._upgrade = true;
    stream._opened = true;
    stream._sendWindow = this.peerStreamWindow;
    stream._recvWindow = this.localStreamWindow;
    this.streams.set(id, stream);
    if (flags & Flag.END_STREAM) {
      stream._remoteEnded = true;
      stream.push(null);
    }
    this.emit('stream', stream);
  }

  private onResponse(flags: number, id: number, payload: Buffer): void {
    if (this.role !== 'client') {
      this.connectionError(protocolError('PROTOCOL_ERROR', 'a client sent RESPONSE', id));
      return;
    }
    const stream = this.streams.get(id);
    if (stream === undefined) {
      this.unknownStream('RESPONSE', id);
      return;
    }
    if (stream._status !== null) {
      this.streamError(stream, ErrorCode.PROTOCOL_ERROR, 'a second RESPONSE on one stream');
      return;
    }
    const headers = decodeVars(payload, 2);
    if (headers instanceof ProtocolError) {
      this.connectionError(new ProtocolError(headers.code, headers.message, id));
      return;
    }
    const status = payload[0] | (payload[1] << 8);
    if (status === 101) {
      if (!stream._upgrade) {
        this.streamError(stream, ErrorCode.PROTOCOL_ERROR, 'a 101 RESPONSE on a stream that did not ask for an upgrade');
        return;
      }
      stream._tunnel = true;
    }
    stream._status = status;
    stream._headers = headers;
    stream.emit('response', stream._status, headers);
    if (flags & Flag.END_STREAM && !stream._wireClosed) this.remoteEnd(stream);
  }

  /** @internal FrameSink: a DATA frame's header; its payload follows in onDataPiece calls, routed to the stream chosen here. */
  onDataHeader(flags: number, id: number, n: number): void {
    this.rxStream = null;
    this.rxEnd = false;
    // Connection credit is consumed and returned on receipt whatever becomes of the stream.
    if (n > 0) {
      if (n > this.connRecvWindow) {
        this.connectionError(protocolError('FLOW_CONTROL_ERROR', `DATA of ${n} bytes exceeds the connection window (${this.connRecvWindow})`, id));
        return;
      }
      this.connRecvWindow -= n;
      this.connCreditOwed += n;
      if (this.connCreditOwed >= this.connCreditThreshold) {
        this.connRecvWindow += this.connCreditOwed;
        this.writeFrame(encodeWindow(0, this.connCreditOwed));
        this.connCreditOwed = 0;
      }
    }
    const stream = this.streams.get(id);
    if (stream === undefined) {
      this.unknownStream('DATA', id);
      return;
    }
    if (stream._remoteEnded) {
      this.streamError(stream, ErrorCode.STREAM_CLOSED, 'DATA after END_STREAM');
      return;
    }
    if (this.role === 'client' && stream._status === null) {
      this.streamError(stream, ErrorCode.PROTOCOL_ERROR, 'DATA before RESPONSE');
      return;
    }
    if (n > 0 && stream._upgrade && !stream._tunnel && this.role === 'server') {
      this.streamError(stream, ErrorCode.PROTOCOL_ERROR, 'DATA before the 101 RESPONSE on an upgrade stream');
      return;
    }
    if (n > 0) {
      if (n > stream._recvWindow) {
        this.connectionError(protocolError('FLOW_CONTROL_ERROR', `DATA of ${n} bytes exceeds the window of stream ${id} (${stream._recvWindow})`, id));
        return;
      }
      stream._recvWindow -= n;
      stream._bodyReceived += n;
      if (stream._bodyReceived > this.maxRequestBody && this.role === 'server' && !stream._tunnel) {
        this.streamError(stream, ErrorCode.BODY_TOO_LARGE, `request body exceeds ${this.maxRequestBody} bytes`);
        return;
      }
      this.rxStream = stream;
      this.rxEnd = (flags & Flag.END_STREAM) !== 0;
      return;
    }
    if (flags & Flag.END_STREAM && !stream._wireClosed) this.endReceived(stream);
  }

  /** @internal FrameSink: bytes [start, end) of `chunk` belong to the current DATA frame. */
  onDataPiece(_chunk: Buffer, start: number, end: number, last: boolean): void {
    const stream = this.rxStream;
    if (stream === null) return; // a frame for a closed or failed stream: its credit was counted, the bytes are dropped
    if (last) this.rxStream = null;
    if (stream.destroyed) return;
    if (stream._rxRanges === null) {
      stream._rxRanges = [start, end];
      this.rxWaiting.push(stream);
    } else stream._rxRanges.push(start, end);
    stream._rxBytes += end - start;
    if (last && this.rxEnd && !stream._wireClosed) this.endReceived(stream);
  }

  /** END_STREAM: what this chunk carried for the stream goes first. */
  private endReceived(stream: GatewireStream): void {
    this.deliverReceived(stream);
    this.remoteEnd(stream);
  }

  private onWindow(id: number, increment: number): void {
    if (increment === 0) {
      this.connectionError(protocolError('PROTOCOL_ERROR', 'WINDOW increment of 0', id));
      return;
    }
    if (id === 0) {
      this.connSendWindow += increment;
      if (this.connSendWindow > MAX_WINDOW) {
        this.connectionError(protocolError('FLOW_CONTROL_ERROR', 'connection window above 2^31-1'));
        return;
      }
      this.flushBlocked();
      return;
    }
    const stream = this.streams.get(id);
    if (stream === undefined) {
      this.unknownStream('WINDOW', id);
      return;
    }
    stream._sendWindow += increment;
    if (stream._sendWindow > MAX_WINDOW) {
      this.streamError(stream, ErrorCode.FLOW_CONTROL_ERROR, 'stream window above 2^31-1');
      return;
    }
    if (stream._outChunk !== null) this._flushStream(stream);
  }

  private onReset(id: number, code: number): void {
    const stream = this.streams.get(id);
    if (stream === undefined) {
      this.unknownStream('RESET', id);
      return;
    }
    this.closeOnWire(stream);
    if (this.role === 'client' && stream._remoteEnded && (code === ErrorCode.CANCEL || code === ErrorCode.NO_ERROR)) {
      // The whole response arrived: the server just does not want the rest of the body.
      stream._stopSending();
      return;
    }
    const retryable = this.role === 'client' && code === ErrorCode.REFUSED_STREAM;
    stream._abort(
      new StreamResetError(code, `stream ${id} reset by the peer: ${ErrorCodeName[code] ?? code}`, { remote: true, retryable, streamId: id }),
      true,
    );
  }

  private onPingAck(payload: Buffer): void {
    const id = payload.readUInt32LE(0);
    const i = this.pings.findIndex((p) => p.id === id);
    if (i < 0) return; // an answer to a ping we no longer wait for
    const p = this.pings[i];
    this.pings.splice(i, 1);
    clearTimeout(p.timer);
    const rtt = performance.now() - p.start;
    p.resolve(rtt);
    this.emit('ping', rtt);
  }

  private onGoaway(info: GoawayInfo): void {
    this.goawayReceived = info;
    this._goingAway = true;
    if (this.role === 'client') {
      for (const stream of this.streams.valuesArray()) {
        if (stream.id <= info.lastStreamId) continue;
        this.closeOnWire(stream);
        stream._abort(
          new StreamResetError(ErrorCode.REFUSED_STREAM, `stream ${stream.id} was not processed: the server sent GOAWAY (last stream ${info.lastStreamId})`, {
            remote: true,
            retryable: true,
            streamId: stream.id,
          }),
          true,
        );
      }
      if (this.pendingOpen.length > 0) this.failPending('the server sent GOAWAY: open the stream on another connection');
    }
    this.emit('goaway', info);
    if (info.code !== ErrorCode.NO_ERROR) {
      this.hadError = true;
      this.emitError(new ProtocolError(info.code as ProtocolError['code'], `the peer sent GOAWAY ${ErrorCodeName[info.code] ?? info.code}: ${info.debug}`));
    }
    this.maybeCloseIdle();
  }

  /** A frame for a stream that is not open: a connection error if it was never opened, else ignored (a race with our RESET). */
  private unknownStream(what: string, id: number): void {
    if (id > this.lastStreamId) this.connectionError(protocolError('PROTOCOL_ERROR', `${what} on stream ${id}, which was never opened`, id));
  }

  private remoteEnd(stream: GatewireStream): void {
    stream._remoteEnded = true;
    stream.push(null);
    if (stream._localEnded) this.closeOnWire(stream);
  }

  // ------------------------------------------------------------ sending

  /** @internal every frame goes through here: cork once per loop iteration so its frames leave in one writev. */
  _writeFrame(buf: Buffer, streamId = -1): void {
    this.writeFrame(buf, streamId);
  }

  /** `streamId`: the stream whose message this frame starts or continues (-1: a control frame or a payload). */
  private writeFrame(buf: Buffer, streamId = -1): void {
    if (this.socketEnded || this.socketClosed) return;
    if (streamId >= 0 && streamId !== this.corkStream) {
      if (this.corkedBytes >= CORK_BATCH_BYTES) this._flushNow();
      this.corkStream = streamId;
    }
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      // setImmediate, not nextTick: the check phase runs once after the whole poll phase, so the
      // frames of every request that arrived in one read burst (many client sockets) leave in one
      // writev instead of one write per request (measured: one writeBuffer per request was ~15%
      // of the proxy's CPU). The delay is within the same loop iteration.
      setImmediate(uncorkSession, this);
    }
    this.socket.write(buf);
    this.corkedBytes += buf.length;
    if (this.corkedBytes >= CORK_LIMIT) this._flushNow();
  }

  /** @internal */
  _uncork(): void {
    if (!this.corked) return;
    this.corked = false;
    this.corkedBytes = 0;
    this.corkStream = -1;
    this.socket.uncork();
  }

  /**
   * @internal Writes the corked frames now. Whether the socket is blocked is decided here, after
   * the kernel had its say (the socket's write() says false for anything corked past 16 KiB,
   * which is no backpressure at all): what it did not take beyond the high water holds DATA back
   * until 'drain' (which comes only after a write() said false: hence writableNeedDrain).
   */
  _flushNow(): void {
    this._uncork();
    if (this.socket.writableNeedDrain && this.socket.writableLength > this.socketHighWater) this.socketBlocked = true;
  }

  private openStream(stream: GatewireStream): void {
    if (stream.destroyed) return;
    const max = this._peerSettings!.maxConcurrentStreams;
    if (this.streams.size >= max) {
      this.refuseLater(stream, ErrorCode.REFUSED_STREAM, `the server accepts ${max} concurrent streams: open the stream on another connection`, true);
      return;
    }
    stream._opened = true;
    stream._sendWindow = this.peerStreamWindow;
    stream._recvWindow = this.localStreamWindow;
    this.streams.set(stream.id, stream);
    this.lastStreamId = stream.id;
    const frame = stream._requestFrame!;
    stream._requestFrame = null;
    this.writeFrame(frame, stream.id);
    if (stream._outChunk !== null || stream._finalCb !== null) this._flushStream(stream);
  }

  /** @internal sends what a stream has queued, as far as both windows and the socket allow. */
  _flushStream(stream: GatewireStream): void {
    if (!stream._opened || this._destroyed) return;
    if (this.role === 'server' && !stream._headersSent && !stream._wireClosed) stream.respond(200, []);
    const chunk = stream._outChunk;
    if (chunk !== null) {
      if (stream._wireClosed || stream._localEnded) {
        stream._completeWrite(null);
        return;
      }
      let off = stream._outOffset;
      while (off < chunk.length) {
        if (this.socketBlocked || this.connSendWindow <= 0) {
          this.block(stream);
          stream._outOffset = off;
          return;
        }
        if (stream._sendWindow <= 0) {
          stream._outOffset = off; // waits for the stream's own WINDOW
          return;
        }
        const n = Math.min(chunk.length - off, stream._sendWindow, this.connSendWindow, MAX_FRAME_PAYLOAD);
        this.writeFrame(encodeDataHeader(stream.id, n, false), stream.id);
        this.writeFrame(n === chunk.length ? chunk : chunk.subarray(off, off + n));
        stream._sendWindow -= n;
        this.connSendWindow -= n;
        off += n;
      }
      if (chunk.length >= BULK_CHUNK_BYTES) this._flushNow();
      stream._completeWrite(null); // may re-enter through _write with the next chunk
      return;
    }
    if (stream._finalCb !== null) {
      if (!stream._localEnded && !stream._wireClosed) {
        this.writeFrame(encodeDataHeader(stream.id, 0, true), stream.id);
        stream._localEnded = true;
        this._afterLocalEnd(stream);
      }
      const cb = stream._finalCb;
      stream._finalCb = null;
      cb();
    }
  }

  /**
   * @internal DATA straight to the socket, past the stream's Writable queue (tunnel relays): only
   * when nothing of the stream is queued, the chunk fits one frame and both windows, and the
   * socket takes writes. False: nothing was written, the caller uses write().
   */
  _sendNow(stream: GatewireStream, chunk: Buffer, endStream = false): boolean {
    const n = chunk.length;
    if (this._destroyed || this.socketBlocked || !stream._opened || stream._wireClosed || stream._localEnded || stream._outChunk !== null) return false;
    if (n === 0 || n > MAX_FRAME_PAYLOAD || n > stream._sendWindow || n > this.connSendWindow) return false;
    if (this.role === 'server' && !stream._headersSent) return false;
    this.writeFrame(encodeDataHeader(stream.id, n, endStream), stream.id);
    this.writeFrame(chunk);
    stream._sendWindow -= n;
    this.connSendWindow -= n;
    if (endStream) {
      stream._localEnded = true;
      this._afterLocalEnd(stream);
    }
    return true;
  }

  /** @internal our END_STREAM went out. */
  _afterLocalEnd(stream: GatewireStream): void {
    if (stream._wireClosed) return;
    if (stream._remoteEnded) {
      this.closeOnWire(stream);
    } else if (this.role === 'server' && !stream._tunnel) {
      // The response is complete but the request body is not: tell the client to stop sending.
      this.writeFrame(encodeReset(stream.id, ErrorCode.CANCEL));
      this.closeOnWire(stream);
      stream._remoteEnded = true;
      stream.push(null);
    }
    if (this.role === 'server' && !stream._tunnel && stream.readableFlowing === null) stream.resume(); // dump an unread body so the stream reaches 'close'
  }

  private block(stream: GatewireStream): void {
    if (stream._blocked) return;
    stream._blocked = true;
    this.blocked.push(stream);
  }

  private flushBlocked(): void {
    if (this.blocked.length === 0) return;
    const list = this.blocked;
    this.blocked = [];
    for (let i = 0; i < list.length; i++) {
      const stream = list[i];
      if (!stream._blocked) continue; // closed meanwhile
      if (this.socketBlocked || this.connSendWindow <= 0) {
        // the rest keep their turn, ahead of streams that stalled during this flush
        const rest = list.slice(i);
        for (let j = 0; j < this.blocked.length; j++) rest.push(this.blocked[j]);
        this.blocked = rest;
        return;
      }
      stream._blocked = false;
      this._flushStream(stream);
    }
  }

  /** @internal the application consumed n bytes of a stream: return stream credit in batches. */
  _consumed(stream: GatewireStream, n: number): void {
    if (stream._wireClosed || stream._remoteEnded) return;
    stream._creditOwed += n;
    if (stream._creditOwed >= this.streamCreditThreshold) {
      stream._recvWindow += stream._creditOwed;
      this.writeFrame(encodeWindow(stream.id, stream._creditOwed));
      stream._creditOwed = 0;
    }
  }

  /** @internal the stream was destroyed locally: RESET it on the wire if it is still open there. */
  _streamDestroyed(stream: GatewireStream, code: number): void {
    if (stream._wireClosed) return;
    if (!stream._opened) {
      const i = this.pendingOpen.indexOf(stream);
      if (i >= 0) this.pendingOpen.splice(i, 1);
      stream._wireClosed = true;
      this.maybeCloseIdle();
      return;
    }
    this.writeFrame(encodeReset(stream.id, code));
    this.closeOnWire(stream);
  }

  private closeOnWire(stream: GatewireStream): void {
    if (stream._wireClosed) return;
    stream._wireClosed = true;
    this.streams.delete(stream.id);
    stream._blocked = false;
    this.maybeCloseIdle();
  }

  private streamError(stream: GatewireStream, code: number, message: string): void {
    this.writeFrame(encodeReset(stream.id, code));
    this.closeOnWire(stream);
    stream._abort(new StreamResetError(code, `stream ${stream.id}: ${message}`, { remote: false, retryable: false, streamId: stream.id }), true);
  }

  private refuseLater(stream: GatewireStream, code: number, message: string, retryable: boolean): GatewireStream {
    stream._wireClosed = true;
    stream._requestFrame = null;
    process.nextTick(failLater, stream, new StreamResetError(code, message, { remote: false, retryable, streamId: stream.id }));
    return stream;
  }

  private failPending(message: string): void {
    const pending = this.pendingOpen;
    this.pendingOpen = [];
    for (const stream of pending) {
      stream._wireClosed = true;
      stream._requestFrame = null;
      stream._abort(new StreamResetError(ErrorCode.REFUSED_STREAM, message, { remote: false, retryable: true, streamId: stream.id }), true);
    }
  }

  // ------------------------------------------------------------ lifecycle

  private maybeCloseIdle(): void {
    if (this._goingAway && !this._destroyed && this.streams.size === 0 && this.pendingOpen.length === 0) {
      this.teardown(null, true);
      this.endSocket();
    }
  }

  /** A connection error we detected: GOAWAY with the code, then close this connection only. */
  private connectionError(err: ProtocolError): void {
    if (this._destroyed) return;
    this.hadError = true;
    if (!this.socketEnded) {
      this.goawaySent = true;
      this.writeFrame(encodeGoaway(this.role === 'server' ? this.lastStreamId : 0, err.code, err.message));
    }
    this.emitError(err);
    this.teardown(err, false);
    this.endSocket();
  }

  private emitError(err: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', err);
  }

  /** Marks the session dead: no more frames in, every stream and ping failed, timers cleared. */
  private teardown(err: Error | null, graceful: boolean): void {
    if (this._destroyed) return;
    this._destroyed = true;
    this._goingAway = true;
    this.decoder.kill();
    this.clearTimers();
    const pings = this.pings;
    this.pings = [];
    for (const p of pings) {
      clearTimeout(p.timer);
      p.reject(err ?? new Error('the session closed before the PING was answered'));
    }
    for (const stream of this.blocked) stream._blocked = false;
    this.blocked = [];
    if (graceful) return;
    const reason = err?.message ?? 'the session closed';
    const pending = this.pendingOpen;
    this.pendingOpen = [];
    for (const stream of pending) {
      stream._wireClosed = true;
      stream._requestFrame = null;
      stream._abort(
        new StreamResetError(ErrorCode.REFUSED_STREAM, `connection failed before the request was sent: ${reason}`, {
          remote: false,
          retryable: true,
          streamId: stream.id,
          cause: err ?? undefined,
        }),
        true,
      );
    }
    const open = this.streams.valuesArray();
    this.streams.clear();
    const goaway = this.goawayReceived;
    for (const stream of open) {
      stream._wireClosed = true;
      const retryable = this.role === 'client' && goaway !== null && stream.id > goaway.lastStreamId;
      const code = err instanceof ProtocolError ? err.code : retryable ? ErrorCode.REFUSED_STREAM : ErrorCode.CANCEL;
      stream._abort(new StreamResetError(code, `stream ${stream.id}: connection lost: ${reason}`, { remote: false, retryable, streamId: stream.id, cause: err ?? undefined }), true);
    }
  }

  private clearTimers(): void {
    if (this.pingTimer !== null) {
      clearInterval(this.pingTimer);
      this.pingTimer = null;
    }
  }

  /** Flush what is queued and half-close; the socket is destroyed if the peer does not close within CLOSE_GRACE_MS. */
  private endSocket(): void {
    if (this.socketEnded || this.socketClosed) return;
    this._uncork();
    this.socketEnded = true;
    this.socket.end();
    this.closeTimer = setTimeout(forceCloseSocket, CLOSE_GRACE_MS, this.socket);
    this.closeTimer.unref();
  }

  private socketClosedNow(): void {
    if (this.socketClosed) return;
    this.socketClosed = true;
    if (!this._destroyed) this.teardown(new Error('the connection closed'), false);
    this.clearTimers();
    if (this.closeTimer !== null) {
      clearTimeout(this.closeTimer);
      this.closeTimer = null;
    }
    const socket = this.socket;
    socket.removeListener('data', this.onSocketData);
    socket.removeListener('drain', this.onSocketDrain);
    socket.removeListener('end', this.onSocketEnd);
    socket.removeListener('close', this.onSocketClose);
    // Keep a listener for a late 'error' so it can never be unhandled.
    if (socket.listenerCount('error') > 1) socket.removeListener('error', this.onSocketError);
    this.emit('close', this.hadError);
  }

  /** @internal interval timer: ping when nothing was received for a whole interval. */
  _pingTick(): void {
    if (this._destroyed) return;
    if (this.receivedSinceTick) {
      this.receivedSinceTick = false;
      return;
    }
    if (this.pings.length > 0) return;
    this.ping().catch(noop);
  }
}

function noop(): void {}

const EMPTY = Buffer.alloc(0);

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
const NO_VARS: Vars = [];
const STREAM_OPTIONS = { allowHalfOpen: true, decodeStrings: true, highWaterMark: 64 * 1024 };
// A client's writable side (a request body the proxy relays) holds two 64 KiB socket reads before
// write() says false: at 64 KiB exactly every 64 KiB read said false (Writable compares
// length < highWaterMark with the chunk counted), so pipe() paused and resumed the client's socket
// once per read. A server's streams keep 64 KiB: the appserver's adapters promise their apps
// 'drain' by that mark.
const CLIENT_STREAM_OPTIONS = { allowHalfOpen: true, decodeStrings: true, readableHighWaterMark: 64 * 1024, writableHighWaterMark: 128 * 1024 };
const BODYLESS_STREAM_OPTIONS = { allowHalfOpen: true, decodeStrings: true, writable: false, highWaterMark: 64 * 1024 };

/**
 * One request/response exchange. Readable side = DATA received ('end' on the
 * peer's END_STREAM); writable side = DATA sent (end() sends END_STREAM).
 * Fields prefixed with `_` are the session's bookkeeping, not API.
 */
export class GatewireStream extends Duplex {
  readonly id: number;
  readonly session: GatewireSession;
  readonly vars: Vars;
  /** The StreamResetError that ended this stream, if any (also set when no 'error' listener was attached). */
  resetError: StreamResetError | null = null;

  /** @internal */ _opened = false;
  /** @internal closed on the wire: no more frames are sent for it, it no longer counts as active. */ _wireClosed = false;
  /** @internal END_STREAM sent */ _localEnded = false;
  /** @internal END_STREAM received */ _remoteEnded = false;
  /** @internal */ _sendWindow = 0;
  /** @internal */ _recvWindow = 0;
  /** @internal consumed bytes whose stream credit is not yet returned */ _creditOwed = 0;
  /** @internal */ _bodyReceived = 0;
  /** @internal */ _outChunk: Buffer | null = null;
  /** @internal */ _outOffset = 0;
  /** @internal waiting in the session's list of streams stalled on connection credit or the socket */ _blocked = false;
  /** @internal */ _outCb: WriteCallback | null = null;
  /** @internal */ _finalCb: WriteCallback | null = null;
  /** @internal client: REQUEST frame waiting for the server's SETTINGS */ _requestFrame: Buffer | null = null;
  /** @internal */ _headersSent = false;
  /** @internal */ _status: number | null = null;
  /** @internal */ _headers: Vars | null = null;
  /** @internal */ _discardWrites = false;
  /** @internal REQUEST carried UPGRADE */ _upgrade = false;
  /** @internal a 101 RESPONSE was sent / received: DATA is tunnel bytes, each direction ends on its own */ _tunnel = false;
  /** @internal [start, end, ...] of the session's current chunk: body bytes received, not yet delivered */ _rxRanges: number[] | null = null;
  /** @internal the bytes in _rxRanges */ _rxBytes = 0;
  /** @internal takes the body instead of the readable side (takeBody) */ _bodySink: BodySink | null = null;
  private resetCode: number = ErrorCode.CANCEL;

  constructor(session: GatewireSession, id: number, vars: Vars, bodyless = false) {
    // A stream opened with END_STREAM starts with its writable side finished (as if end() had run):
    // the common GET skips Writable's end/final/finish round of ticks and events.
    super(bodyless ? BODYLESS_STREAM_OPTIONS : session.role === 'client' ? CLIENT_STREAM_OPTIONS : STREAM_OPTIONS);
    this.session = session;
    this.id = id;
    this.vars = vars;
  }

  /** True when the REQUEST asked for an upgrade (PROTOCOL.md 4.3). */
  get upgrade(): boolean {
    return this._upgrade;
  }
  /** True once a 101 RESPONSE turned this upgrade stream into a tunnel. */
  get tunnel(): boolean {
    return this._tunnel;
  }

  /** Server: true once respond() was called. */
  get headersSent(): boolean {
    return this._headersSent;
  }
  /** Client: the response status once 'response' was emitted. */
  get status(): number | null {
    return this._status;
  }
  /** Client: the response headers (flat name/value list) once 'response' was emitted. */
  get headers(): Vars | null {
    return this._headers;
  }

  /** END_STREAM received and the stream closed on the wire: everything the peer sends is here (buffered or read). */
  get complete(): boolean {
    return this._remoteEnded && this._wireClosed;
  }
  /** DATA bytes received on this stream so far. */
  get bodyReceived(): number {
    return this._bodyReceived;
  }
  /** A write is waiting for flow-control credit or the socket: the peer is not taking our bytes. */
  get sendStalled(): boolean {
    return this._outChunk !== null;
  }

  /** Server: sends the RESPONSE head. Throws a ProtocolError (VARS_TOO_LARGE) if the headers do not fit a frame. */
  respond(status: number, headers: Vars, opts?: { endStream?: boolean }): void {
    if (this.session.role !== 'server') throw new Error('respond() is for server streams');
    if (this._headersSent) throw new Error(`stream ${this.id}: the response head was already sent`);
    const endStream = opts?.endStream === true;
    if (status === 101 && !this._upgrade) throw new Error(`stream ${this.id}: a 101 response needs a REQUEST that asked for an upgrade`);
    const frame = encodeResponseFrame(this.id, status, headers, endStream);
    if (frame instanceof ProtocolError) throw frame;
    if (status === 101) this._tunnel = true;
    this._headersSent = true;
    if (this._wireClosed) return;
    this.session._writeFrame(frame, this.id);
    if (endStream) {
      this._localEnded = true;
      this.session._afterLocalEnd(this);
      this.end();
    }
  }

  /**
   * Server: the RESPONSE head, a whole body and END_STREAM (what respond() and end(body) do): the
   * DATA frames go out at once when nothing is queued and both windows allow, the last one
   * carrying END_STREAM — no write()/final() round through the Writable and no empty closing
   * frame; what does not fit the windows now takes the ordinary write path. A body given in
   * pieces (an app's writes of one tick, a stream that was complete at once) goes out as they
   * are, in order, without being joined into one buffer.
   */
  respondWhole(status: number, headers: Vars, body: Uint8Array | readonly Uint8Array[]): void {
    const pieces = body instanceof Uint8Array ? null : body;
    // The last piece with bytes carries END_STREAM; -1: no bytes at all.
    let last = -1;
    if (pieces === null) last = (body as Uint8Array).byteLength > 0 ? 0 : -1;
    else for (let i = pieces.length - 1; i >= 0 && last < 0; i--) if (pieces[i].byteLength > 0) last = i;
    if (last < 0) {
      this.respond(status, headers, { endStream: true });
      return;
    }
    this.respond(status, headers);
    const count = pieces === null ? 1 : last + 1;
    let i = 0;
    let off = 0;
    let bytes = asBuffer(pieces === null ? (body as Uint8Array) : pieces[0]);
    if (this.writableLength === 0 && !this.writableEnded && !this.destroyed) {
      for (;;) {
        off = bytes.length === 0 ? 0 : this.sendNow(bytes, i === count - 1);
        if (off < bytes.length) break;
        off = 0;
        if (++i === count) {
          this.end();
          return;
        }
        bytes = asBuffer(pieces![i]);
      }
    }
    // What the windows or the socket did not take now, through the Writable (which then waits for credit).
    for (;;) {
      const rest = off === 0 ? bytes : bytes.subarray(off);
      off = 0;
      if (i === count - 1) {
        this.end(rest);
        return;
      }
      if (rest.length > 0) this.write(rest);
      bytes = asBuffer(pieces![++i]);
    }
  }

  /** DATA frames for `bytes` straight to the session while both windows and the socket allow; how far it got. */
  private sendNow(bytes: Buffer, endStream: boolean): number {
    const session = this.session;
    let off = 0;
    while (bytes.length - off > MAX_FRAME_PAYLOAD) {
      if (!session._sendNow(this, bytes.subarray(off, off + MAX_FRAME_PAYLOAD))) return off;
      off += MAX_FRAME_PAYLOAD;
    }
    return session._sendNow(this, off === 0 ? bytes : bytes.subarray(off), endStream) ? bytes.length : off;
  }

  /** Which wire an appserver exchange came on (uwsgi classic connections say 'uwsgi'). */
  get protocol(): 'native' {
    return 'native';
  }

  /** Server: the response is complete and the rest of the request body is not wanted: RESET CANCEL stops the upload (if it all came already, it is just dropped). */
  discardBody(): void {
    if (this._remoteEnded) this.resume();
    else this.reset(ErrorCode.CANCEL);
  }

  /**
   * The whole body is wanted at once (a server reading text(), json(), ...): from now on its bytes
   * go to `sink` as they are decoded — no chunk, no 'data' event and no readable buffering each —
   * and count as consumed at once (flow control then paces the peer by the sink's speed, which is a
   * copy). What the readable side already holds goes to the sink first. 'end' still says the body
   * is complete, 'close' without it that it never will be.
   */
  takeBody(sink: BodySink): void {
    for (let c = this.read() as Buffer | null; c !== null; c = this.read() as Buffer | null) sink(c, 0, c.length);
    this._bodySink = sink;
    this.resume();
  }

  /**
   * Forgets the request vars and the response head (a long-lived tunnel needs neither again):
   * an idle tunnel's memory is a budget. `vars` is empty and `headers` null afterwards.
   */
  dropHeads(): void {
    (this as { vars: Vars }).vars = NO_VARS;
    this._headers = null;
  }

  /**
   * Writes `chunk` as DATA at once when nothing is queued ahead of it and flow control allows,
   * skipping the Writable machinery (a relay's hot path); false when it did not, and the caller
   * uses write() as usual (which then also gives backpressure).
   */
  tryWriteNow(chunk: Buffer): boolean {
    if (this.writableLength > 0 || this.writableEnded || this.destroyed || this._discardWrites) return false;
    return this.session._sendNow(this, chunk);
  }

  /** Sends RESET (default CANCEL) and destroys the stream locally, without an error. */
  reset(code: number = ErrorCode.CANCEL): void {
    this.resetCode = code;
    this.destroy();
  }

  override _read(): void {
    // Data is pushed as frames arrive; consumption is observed in emit('data') below.
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, cb: WriteCallback): void {
    if (this._discardWrites || this._localEnded) {
      cb();
      return;
    }
    this._outChunk = chunk;
    this._outOffset = 0;
    this._outCb = cb;
    this.session._flushStream(this);
  }

  override _final(cb: WriteCallback): void {
    if (this._discardWrites || this._localEnded) {
      cb();
      return;
    }
    this._finalCb = cb;
    this.session._flushStream(this);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.session._streamDestroyed(this, this.resetCode);
    if (this._outCb !== null) this._completeWrite(err ?? new Error(`stream ${this.id} was destroyed`));
    this._finalCb = null;
    cb(err);
  }

  /**
   * Every chunk handed to the application goes through emit('data') — flowing
   * mode, pipe, read() and async iteration alike — so this is where the bytes
   * count as consumed and stream credit may be returned.
   */
  override emit(event: string | symbol, ...args: any[]): boolean {
    if (event === 'data') this.session._consumed(this, (args[0] as Buffer).length);
    // A reset nobody listens for must not crash the process (the error stays in resetError).
    else if (event === 'error' && args[0] instanceof StreamResetError && this.listenerCount('error') === 0) return false;
    return super.emit(event, ...args);
  }

  /** @internal */
  _completeWrite(err: Error | null): void {
    const cb = this._outCb!;
    this._outChunk = null;
    this._outCb = null;
    this._outOffset = 0;
    cb(err);
  }

  /** @internal the peer cancelled after a complete response: finish the writable side without sending. */
  _stopSending(): void {
    this._discardWrites = true;
    if (this._outCb !== null) this._completeWrite(null);
    if (this._finalCb !== null) {
      const cb = this._finalCb;
      this._finalCb = null;
      cb();
    }
  }

  /** @internal ends the stream because of the peer or the connection ('aborted' first when `aborted`). */
  _abort(err: StreamResetError, aborted: boolean): void {
    if (this.destroyed) return;
    this._wireClosed = true;
    this.resetError = err;
    if (aborted) this.emit('aborted');
    this.destroy(err);
  }
}
