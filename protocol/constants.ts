// The one source of truth for every constant of the gatewire wire formats.
// PROTOCOL.md documents these values; test/protocol-constants.test.ts checks
// that the document and this file agree.

/** Every native frame starts with this many bytes: type u8 | length u16le | flags u8 | stream id u32le. */
export const FRAME_HEADER_SIZE = 8;
/** The length field is a u16, so one frame carries at most this many payload bytes. */
export const MAX_FRAME_PAYLOAD = 0xffff;

/** The uwsgi classic packet header: modifier1 u8 | datasize u16le | modifier2 u8. */
export const UWSGI_HEADER_SIZE = 4;
/** A vars block (uwsgi datasize, native REQUEST/RESPONSE payload) is at most this many bytes. */
export const MAX_VARS_SIZE = 0xffff;
/** modifier1 used by NGINX's uwsgi_pass by default (Python/WSGI request). */
export const UWSGI_MODIFIER1_WSGI = 0;

/** Native frame types. Zero is left unused so a native connection never starts like a default uwsgi packet. */
export const FrameType = {
  /** Connection preface and parameters; first frame on a connection in each direction, stream 0. */
  SETTINGS: 0x01,
  /** Opens a stream (client → server); payload is a vars block. */
  REQUEST: 0x02,
  /** Response head (server → client); payload is status u16le followed by a vars block of headers. */
  RESPONSE: 0x03,
  /** Body bytes of a stream, either direction; flow controlled. */
  DATA: 0x04,
  /** Abrupt termination of one stream; payload is an error code u32le. */
  RESET: 0x05,
  /** Flow-control credit; payload is an increment u32le; stream 0 means the connection. */
  WINDOW: 0x06,
  /** Liveness probe; 8 opaque bytes echoed back with the ACK flag. */
  PING: 0x07,
  /** Graceful shutdown; payload is last accepted stream id u32le, error code u32le, optional UTF-8 debug text. */
  GOAWAY: 0x08,
} as const;
export type FrameTypeValue = (typeof FrameType)[keyof typeof FrameType];

export const FrameTypeName: Record<number, string> = Object.fromEntries(
  Object.entries(FrameType).map(([name, value]) => [value, name]),
);

/** Frame flags. */
export const Flag = {
  /** On REQUEST, RESPONSE or DATA: the sender will send nothing more on this stream. */
  END_STREAM: 0x01,
  /** On PING: this is the answer. */
  ACK: 0x02,
  /** On REQUEST: the client asks to switch protocols (HTTP Upgrade, WebSocket); a 101 RESPONSE turns the stream into a tunnel. */
  UPGRADE: 0x04,
} as const;

/** The SETTINGS payload starts with these four bytes; a server uses them to tell native from uwsgi classic. */
export const PREFACE_MAGIC = Buffer.from('GWIR', 'latin1');
export const PROTOCOL_VERSION = 1;
/**
 * SETTINGS payload layout (20 bytes, all little-endian):
 *   0  magic "GWIR"
 *   4  version u8
 *   5  reserved u8 × 3 (zero)
 *   8  max concurrent streams u32 (streams the sender is willing to receive)
 *  12  initial stream window u32 (credit the sender grants each new stream for DATA it receives)
 *  16  initial connection window u32 (credit the sender grants the connection as a whole)
 */
export const SETTINGS_PAYLOAD_SIZE = 20;
/** Bytes a server needs to see before it can tell native from classic: a SETTINGS header plus the magic. */
export const PREFACE_DETECT_SIZE = FRAME_HEADER_SIZE + 4;

export const DEFAULT_MAX_CONCURRENT_STREAMS = 128;
export const DEFAULT_INITIAL_STREAM_WINDOW = 256 * 1024;
export const DEFAULT_INITIAL_CONNECTION_WINDOW = 1024 * 1024;
/** Windows are signed 31-bit quantities as in HTTP/2: credit beyond this is a FLOW_CONTROL_ERROR. */
export const MAX_WINDOW = 0x7fffffff;
/** Stream ids are u32; 0 is the connection itself. */
export const MAX_STREAM_ID = 0xffffffff;
export const PING_PAYLOAD_SIZE = 8;
export const RESET_PAYLOAD_SIZE = 4;
export const WINDOW_PAYLOAD_SIZE = 4;
export const GOAWAY_MIN_PAYLOAD_SIZE = 8;

/** Error codes carried by RESET and GOAWAY; ProtocolError.code uses the same numbers. */
export const ErrorCode = {
  NO_ERROR: 0x0,
  PROTOCOL_ERROR: 0x1,
  INTERNAL_ERROR: 0x2,
  FLOW_CONTROL_ERROR: 0x3,
  STREAM_CLOSED: 0x4,
  FRAME_SIZE_ERROR: 0x5,
  REFUSED_STREAM: 0x6,
  CANCEL: 0x7,
  VARS_TOO_LARGE: 0x8,
  BODY_TOO_LARGE: 0x9,
  TIMEOUT: 0xa,
  UNSUPPORTED_VERSION: 0xb,
} as const;
export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

export const ErrorCodeName: Record<number, string> = Object.fromEntries(
  Object.entries(ErrorCode).map(([name, value]) => [value, name]),
);
