// Request bodies on the proxy's side: the one body-size limiter (NGINX's
// client_max_body_size, 413) for bodies read whole and bodies streamed with
// chunked framing, and the reading of a body whole (small bodies kept for a
// replay, chunked uploads to uwsgi which needs their length first).
import { type Readable, Transform, type TransformCallback } from 'node:stream';
import { BodyTooLargeError, ClientAbortedError } from './errors.ts';

/** Counts a streamed body and fails it past `max` bytes (chunked uploads, whose length nobody announced). */
export class BodyLimit extends Transform {
  private seen = 0;
  private readonly max: number;
  constructor(max: number) {
    super();
    this.max = max;
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.max) cb(new BodyTooLargeError(this.max));
    else cb(null, chunk);
  }
}

/**
 * Reads a whole body into one buffer: exactly `length` bytes when it was announced (the parser
 * never delivers more), else at most `max` (413 past it). Rejects when the body breaks or the
 * client goes away before its end.
 */
export function readWholeBody(body: Readable, max: number, length = -1): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const whole = length >= 0 ? Buffer.allocUnsafe(length) : null;
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      if (whole !== null) {
        size += chunk.copy(whole, size);
        return;
      }
      size += chunk.length;
      if (size > max) {
        body.destroy(new BodyTooLargeError(max));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      if (whole !== null) {
        if (size === length) resolve(whole);
        else reject(new ClientAbortedError());
      } else resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const onClose = () => {
      cleanup();
      if (!body.readableEnded) reject(new ClientAbortedError());
    };
    const cleanup = () => {
      body.removeListener('data', onData);
      body.removeListener('end', onEnd);
      body.removeListener('error', onError);
      body.removeListener('close', onClose);
    };
    body.on('data', onData);
    body.once('end', onEnd);
    body.once('error', onError);
    body.once('close', onClose);
  });
}
