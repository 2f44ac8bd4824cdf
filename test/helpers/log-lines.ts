// A Writable that keeps every chunk written to it as a string: what a logger wrote, line by line.
import { Writable } from 'node:stream';

export function captureLines(): { lines: string[]; stream: Writable } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      lines.push(String(chunk));
      cb();
    },
  });
  return { lines, stream };
}
