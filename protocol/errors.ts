import { ErrorCode, ErrorCodeName, type ErrorCodeValue } from './constants.ts';

/**
 * A violation of the wire format. Decoders return (never throw) these so that a
 * hostile peer can only ever end its own connection; `code` is the number sent
 * in RESET/GOAWAY, `streamId` is set when only one stream is at fault.
 */
export class ProtocolError extends Error {
  readonly code: ErrorCodeValue;
  readonly codeName: string;
  readonly streamId: number;
  constructor(code: ErrorCodeValue, message: string, streamId = 0) {
    super(message);
    this.name = 'ProtocolError';
    this.code = code;
    this.codeName = ErrorCodeName[code] ?? `UNKNOWN_${code}`;
    this.streamId = streamId;
  }
}

export function protocolError(code: keyof typeof ErrorCode, message: string, streamId = 0): ProtocolError {
  return new ProtocolError(ErrorCode[code], message, streamId);
}
