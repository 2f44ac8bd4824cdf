// gatewire native framing: encoder helpers and the incremental FrameDecoder.
//
// Hand-written because it is the codec itself. The decoder is built the way
// undici's parser is: payloads are handed out as views into the pushed chunk
// when a frame lies inside one chunk (zero copy), the 8-byte header of a frame
// split across chunks is assembled in one reused scratch buffer, and a split
// payload of a control frame (REQUEST, RESPONSE, ...) is assembled once into a
// buffer of exactly its size (at most MAX_FRAME_PAYLOAD, so memory per
// connection is bounded). DATA payloads are never assembled when the sink
// takes them in pieces (FrameSink.onDataHeader/onDataPiece): a body frame split
// across two socket reads then costs no allocation and no copy here, and the
// sink decides where the bytes go (the session copies them once, straight into
// what the application receives).
import {
  ErrorCode,
  Flag,
  FRAME_HEADER_SIZE,
  FrameType,
  FrameTypeName,
  GOAWAY_MIN_PAYLOAD_SIZE,
  MAX_FRAME_PAYLOAD,
  MAX_VARS_SIZE,
  MAX_WINDOW,
  PING_PAYLOAD_SIZE,
  PREFACE_MAGIC,
  PROTOCOL_VERSION,
  RESET_PAYLOAD_SIZE,
  SETTINGS_PAYLOAD_SIZE,
  WINDOW_PAYLOAD_SIZE,
} from './constants.ts';
import { ProtocolError, protocolError } from './errors.ts';
import { type Vars, varsSize, writeVars } from './vars.ts';

export interface Settings {
  version: number;
  maxConcurrentStreams: number;
  initialStreamWindow: number;
  initialConnectionWindow: number;
}

/** Receives whole frames. `payload` may be a view into the caller's chunk: copy it to keep it past the call if the chunk is reused. */
export interface FrameSink {
  onFrame(type: number, flags: number, streamId: number, payload: Buffer): void;
  /**
   * Optional, with onDataPiece: DATA frames come here instead of onFrame, the header first (its
   * shape checked), then the payload in one or more pieces as the chunks arrive. A sink without
   * them gets every DATA frame whole through onFrame.
   */
  onDataHeader?(flags: number, streamId: number, length: number): void;
  /** Bytes [start, end) of `chunk` are the next part of the current DATA payload (valid during the call only); `last` on its final part. Never called for an empty payload. */
  onDataPiece?(chunk: Buffer, start: number, end: number, last: boolean): void;
}

// ---------------------------------------------------------------- encoding

export function writeFrameHeader(target: Buffer, offset: number, type: number, length: number, flags: number, streamId: number): void {
  target[offset] = type;
  target[offset + 1] = length & 0xff;
  target[offset + 2] = length >>> 8;
  target[offset + 3] = flags;
  target.writeUInt32LE(streamId >>> 0, offset + 4);
}

/** One buffer holding a frame header and a copy of `payload`. */
export function encodeFrame(type: number, flags: number, streamId: number, payload?: Buffer): Buffer {
  const length = payload ? payload.length : 0;
  if (length > MAX_FRAME_PAYLOAD) throw new RangeError(`frame payload of ${length} bytes exceeds ${MAX_FRAME_PAYLOAD}`);
  const buf = Buffer.allocUnsafe(FRAME_HEADER_SIZE + length);
  writeFrameHeader(buf, 0, type, length, flags, streamId);
  if (payload) payload.copy(buf, FRAME_HEADER_SIZE);
  return buf;
}

/** Just the 8-byte header of a DATA frame, so the payload can go out by writev without a copy. */
export function encodeDataHeader(streamId: number, length: number, endStream: boolean): Buffer {
  const buf = Buffer.allocUnsafe(FRAME_HEADER_SIZE);
  writeFrameHeader(buf, 0, FrameType.DATA, length, endStream ? Flag.END_STREAM : 0, streamId);
  return buf;
}

export function encodeSettings(s: Partial<Settings> & Omit<Settings, 'version'>): Buffer {
  const buf = Buffer.alloc(FRAME_HEADER_SIZE + SETTINGS_PAYLOAD_SIZE);
  writeFrameHeader(buf, 0, FrameType.SETTINGS, SETTINGS_PAYLOAD_SIZE, 0, 0);
  PREFACE_MAGIC.copy(buf, FRAME_HEADER_SIZE);
  buf[FRAME_HEADER_SIZE + 4] = s.version ?? PROTOCOL_VERSION;
  buf.writeUInt32LE(s.maxConcurrentStreams, FRAME_HEADER_SIZE + 8);
  buf.writeUInt32LE(s.initialStreamWindow, FRAME_HEADER_SIZE + 12);
  buf.writeUInt32LE(s.initialConnectionWindow, FRAME_HEADER_SIZE + 16);
  return buf;
}

/** A REQUEST frame: the vars block is the payload. Fails with VARS_TOO_LARGE past 65,535 bytes. */
export function encodeRequestFrame(streamId: number, vars: Vars, endStream: boolean, upgrade = false): Buffer | ProtocolError {
  const size = varsSize(vars);
  if (size < 0 || size > MAX_VARS_SIZE) {
    return protocolError('VARS_TOO_LARGE', `request vars of ${size < 0 ? 'over 65535' : size} bytes exceed ${MAX_VARS_SIZE}`, streamId);
  }
  const buf = Buffer.allocUnsafe(FRAME_HEADER_SIZE + size);
  writeFrameHeader(buf, 0, FrameType.REQUEST, size, (endStream ? Flag.END_STREAM : 0) | (upgrade ? Flag.UPGRADE : 0), streamId);
  writeVars(buf, FRAME_HEADER_SIZE, vars);
  return buf;
}

/** A RESPONSE frame: status u16le, then the headers as a vars block (names as given, repeats kept). */
export function encodeResponseFrame(streamId: number, status: number, headers: Vars, endStream: boolean): Buffer | ProtocolError {
  const size = varsSize(headers);
  if (size < 0 || size + 2 > MAX_FRAME_PAYLOAD) {
    return protocolError('VARS_TOO_LARGE', `response headers of ${size < 0 ? 'over 65535' : size} bytes exceed ${MAX_FRAME_PAYLOAD - 2}`, streamId);
  }
  const buf = Buffer.allocUnsafe(FRAME_HEADER_SIZE + 2 + size);
  writeFrameHeader(buf, 0, FrameType.RESPONSE, size + 2, endStream ? Flag.END_STREAM : 0, streamId);
  buf[FRAME_HEADER_SIZE] = status & 0xff;
  buf[FRAME_HEADER_SIZE + 1] = status >>> 8;
  writeVars(buf, FRAME_HEADER_SIZE + 2, headers);
  return buf;
}

export function encodeReset(streamId: number, code: number): Buffer {
  const buf = Buffer.allocUnsafe(FRAME_HEADER_SIZE + RESET_PAYLOAD_SIZE);
  writeFrameHeader(buf, 0, FrameType.RESET, RESET_PAYLOAD_SIZE, 0, streamId);
  buf.writeUInt32LE(code >>> 0, FRAME_HEADER_SIZE);
  return buf;
}

export function encodeWindow(streamId: number, increment: number): Buffer {
  const buf = Buffer.allocUnsafe(FRAME_HEADER_SIZE + WINDOW_PAYLOAD_SIZE);
  writeFrameHeader(buf, 0, FrameType.WINDOW, WINDOW_PAYLOAD_SIZE, 0, streamId);
  buf.writeUInt32LE(increment >>> 0, FRAME_HEADER_SIZE);
  return buf;
}

export function encodePing(opaque: Buffer, ack: boolean): Buffer {
  const buf = Buffer.alloc(FRAME_HEADER_SIZE + PING_PAYLOAD_SIZE);
  writeFrameHeader(buf, 0, FrameType.PING, PING_PAYLOAD_SIZE, ack ? Flag.ACK : 0, 0);
  opaque.copy(buf, FRAME_HEADER_SIZE, 0, PING_PAYLOAD_SIZE);
  return buf;
}

export function encodeGoaway(lastStreamId: number, code: number, debug = ''): Buffer {
  const text = Buffer.from(debug.slice(0, 1024), 'utf8');
  const buf = Buffer.allocUnsafe(FRAME_HEADER_SIZE + GOAWAY_MIN_PAYLOAD_SIZE + text.length);
  writeFrameHeader(buf, 0, FrameType.GOAWAY, GOAWAY_MIN_PAYLOAD_SIZE + text.length, 0, 0);
  buf.writeUInt32LE(lastStreamId >>> 0, FRAME_HEADER_SIZE);
  buf.writeUInt32LE(code >>> 0, FRAME_HEADER_SIZE + 4);
  text.copy(buf, FRAME_HEADER_SIZE + GOAWAY_MIN_PAYLOAD_SIZE);
  return buf;
}

// ---------------------------------------------------------------- payload decoding

export function decodeSettings(payload: Buffer): Settings | ProtocolError {
  if (payload.length !== SETTINGS_PAYLOAD_SIZE) return protocolError('FRAME_SIZE_ERROR', `SETTINGS payload must be ${SETTINGS_PAYLOAD_SIZE} bytes, got ${payload.length}`);
  if (!payload.subarray(0, 4).equals(PREFACE_MAGIC)) return protocolError('PROTOCOL_ERROR', 'SETTINGS without the GWIR magic');
  const version = payload[4];
  if (version !== PROTOCOL_VERSION) return protocolError('UNSUPPORTED_VERSION', `protocol version ${version} is not supported (this peer speaks ${PROTOCOL_VERSION})`);
  const s: Settings = {
    version,
    maxConcurrentStreams: payload.readUInt32LE(8),
    initialStreamWindow: payload.readUInt32LE(12),
    initialConnectionWindow: payload.readUInt32LE(16),
  };
  if (s.initialStreamWindow > MAX_WINDOW || s.initialConnectionWindow > MAX_WINDOW) {
    return protocolError('FLOW_CONTROL_ERROR', 'SETTINGS window above 2^31-1');
  }
  return s;
}

export interface GoawayInfo {
  lastStreamId: number;
  code: number;
  debug: string;
}

export function decodeGoaway(payload: Buffer): GoawayInfo {
  return {
    lastStreamId: payload.readUInt32LE(0),
    code: payload.readUInt32LE(4),
    debug: payload.toString('utf8', GOAWAY_MIN_PAYLOAD_SIZE),
  };
}

// ---------------------------------------------------------------- FrameDecoder

// Decoder states as plain numbers (biome forbids const enums; tsx compiles each file alone).
const State = { Header: 0, Payload: 1, Dead: 2, DataPieces: 3 } as const;
type StateValue = (typeof State)[keyof typeof State];

/**
 * Incremental decoder for a native connection. push() never throws: it returns
 * null, or the ProtocolError that ended the connection (and returns the same
 * error forever after). Per-frame shape is checked here (fixed payload sizes,
 * which frames may use stream 0, the SETTINGS preface first); stream state is
 * the session's business.
 */
export class FrameDecoder {
  private readonly sink: FrameSink;
  private readonly header = Buffer.allocUnsafe(FRAME_HEADER_SIZE);
  private headerFill = 0;
  private state: StateValue = State.Header;
  private type = 0;
  private flags = 0;
  private streamId = 0;
  private length = 0;
  private payload: Buffer | null = null;
  private payloadFill = 0;
  private sawPreface: boolean;
  private error: ProtocolError | null = null;
  /** The sink takes DATA in pieces (see FrameSink.onDataHeader). */
  private readonly dataPieces: boolean;
  /** Frames decoded so far (for stats and tests). */
  frames = 0;

  constructor(sink: FrameSink, opts: { expectPreface?: boolean } = {}) {
    this.sink = sink;
    this.sawPreface = opts.expectPreface === false;
    this.dataPieces = typeof sink.onDataHeader === 'function' && typeof sink.onDataPiece === 'function';
  }

  get failed(): ProtocolError | null {
    return this.error;
  }

  push(chunk: Buffer): ProtocolError | null {
    if (this.state === State.Dead) return this.error;
    let pos = 0;
    const len = chunk.length;
    while (pos < len) {
      if (this.state === State.Header) {
        if (this.headerFill === 0 && len - pos >= FRAME_HEADER_SIZE) {
          // Fast path: the whole header is in this chunk.
          this.type = chunk[pos];
          this.length = chunk[pos + 1] | (chunk[pos + 2] << 8);
          this.flags = chunk[pos + 3];
          this.streamId = chunk.readUInt32LE(pos + 4);
          pos += FRAME_HEADER_SIZE;
        } else {
          const n = Math.min(FRAME_HEADER_SIZE - this.headerFill, len - pos);
          chunk.copy(this.header, this.headerFill, pos, pos + n);
          this.headerFill += n;
          pos += n;
          if (this.headerFill < FRAME_HEADER_SIZE) break;
          this.headerFill = 0;
          this.type = this.header[0];
          this.length = this.header[1] | (this.header[2] << 8);
          this.flags = this.header[3];
          this.streamId = this.header.readUInt32LE(4);
        }
        const err = this.checkHeader();
        if (err) return this.fail(err);
        if (this.type === FrameType.DATA && this.dataPieces) {
          this.frames++;
          this.sink.onDataHeader!(this.flags, this.streamId, this.length);
          if (this.killed()) return this.error;
          if (this.length === 0) continue;
          this.payloadFill = 0;
          this.state = State.DataPieces;
          continue;
        }
        if (this.length === 0) {
          if (!this.emit(EMPTY)) return this.error;
          continue;
        }
        if (len - pos >= this.length) {
          const payload = chunk.subarray(pos, pos + this.length);
          pos += this.length;
          if (!this.emit(payload)) return this.error;
          continue;
        }
        this.payload = Buffer.allocUnsafe(this.length);
        this.payloadFill = 0;
        this.state = State.Payload;
      }
      if (this.state === State.DataPieces) {
        const n = Math.min(this.length - this.payloadFill, len - pos);
        this.payloadFill += n;
        const last = this.payloadFill === this.length;
        if (last) this.state = State.Header;
        this.sink.onDataPiece!(chunk, pos, pos + n, last);
        pos += n;
        if (this.killed()) return this.error;
        continue;
      }
      // State.Payload: finish assembling a split payload.
      const payload = this.payload!;
      const n = Math.min(this.length - this.payloadFill, len - pos);
      chunk.copy(payload, this.payloadFill, pos, pos + n);
      this.payloadFill += n;
      pos += n;
      if (this.payloadFill === this.length) {
        this.payload = null;
        this.state = State.Header;
        if (!this.emit(payload)) return this.error;
      }
    }
    return null;
  }

  /** Bytes held between pushes: a partial header, or a split control payload (at most FRAME_HEADER_SIZE + MAX_FRAME_PAYLOAD; a DATA payload given in pieces holds none). */
  get bufferedBytes(): number {
    return this.headerFill + (this.payload ? this.payload.length : 0);
  }

  /** True while the decoder is between frames (no partial frame buffered). */
  get idle(): boolean {
    return this.state === State.Header && this.headerFill === 0;
  }

  private emit(payload: Buffer): boolean {
    this.frames++;
    if (this.type === FrameType.SETTINGS) {
      const s = decodeSettings(payload);
      if (s instanceof ProtocolError) {
        this.fail(s);
        return false;
      }
      this.sawPreface = true;
    }
    this.sink.onFrame(this.type, this.flags, this.streamId, payload);
    // The sink may have killed the decoder (e.g. the session was destroyed).
    return this.state !== State.Dead;
  }

  /** The sink may kill the decoder from inside a call (the session was destroyed). */
  private killed(): boolean {
    return this.state === State.Dead;
  }

  private checkHeader(): ProtocolError | null {
    const { type, length, streamId } = this;
    const name = FrameTypeName[type];
    if (name === undefined) return protocolError('PROTOCOL_ERROR', `unknown frame type 0x${type.toString(16).padStart(2, '0')}`);
    if (!this.sawPreface && type !== FrameType.SETTINGS) return protocolError('PROTOCOL_ERROR', `${name} frame before the SETTINGS preface`);
    switch (type) {
      case FrameType.SETTINGS:
        if (this.sawPreface) return protocolError('PROTOCOL_ERROR', 'SETTINGS sent twice');
        if (streamId !== 0) return protocolError('PROTOCOL_ERROR', 'SETTINGS on a stream');
        if (length !== SETTINGS_PAYLOAD_SIZE) return protocolError('FRAME_SIZE_ERROR', `SETTINGS payload must be ${SETTINGS_PAYLOAD_SIZE} bytes, got ${length}`);
        return null;
      case FrameType.PING:
        if (streamId !== 0) return protocolError('PROTOCOL_ERROR', 'PING on a stream');
        if (length !== PING_PAYLOAD_SIZE) return protocolError('FRAME_SIZE_ERROR', `PING payload must be ${PING_PAYLOAD_SIZE} bytes, got ${length}`);
        return null;
      case FrameType.GOAWAY:
        if (streamId !== 0) return protocolError('PROTOCOL_ERROR', 'GOAWAY on a stream');
        if (length < GOAWAY_MIN_PAYLOAD_SIZE) return protocolError('FRAME_SIZE_ERROR', `GOAWAY payload must be at least ${GOAWAY_MIN_PAYLOAD_SIZE} bytes`);
        return null;
      case FrameType.WINDOW:
        if (length !== WINDOW_PAYLOAD_SIZE) return protocolError('FRAME_SIZE_ERROR', `WINDOW payload must be ${WINDOW_PAYLOAD_SIZE} bytes, got ${length}`);
        return null;
      case FrameType.RESET:
        if (streamId === 0) return protocolError('PROTOCOL_ERROR', 'RESET on stream 0');
        if (length !== RESET_PAYLOAD_SIZE) return protocolError('FRAME_SIZE_ERROR', `RESET payload must be ${RESET_PAYLOAD_SIZE} bytes, got ${length}`);
        return null;
      case FrameType.RESPONSE:
        if (length < 2) return protocolError('FRAME_SIZE_ERROR', 'RESPONSE payload shorter than its status');
        if (streamId === 0) return protocolError('PROTOCOL_ERROR', 'RESPONSE on stream 0');
        return null;
      default: // REQUEST, DATA
        if (streamId === 0) return protocolError('PROTOCOL_ERROR', `${name} on stream 0`);
        return null;
    }
  }

  private fail(err: ProtocolError): ProtocolError {
    this.state = State.Dead;
    this.payload = null;
    this.error = err;
    return err;
  }

  /** Stops decoding; later push() calls return `err`. Used by a session that tears the connection down. */
  kill(err: ProtocolError = new ProtocolError(ErrorCode.CANCEL, 'connection closed')): void {
    this.fail(err);
  }
}

const EMPTY = Buffer.alloc(0);
