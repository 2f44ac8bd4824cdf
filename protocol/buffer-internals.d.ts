// Node's Buffer has unchecked latin1 fast paths (the ones undici and Node's own
// HTTP parser use) that @types/node does not declare. We use them on the hot
// path of the vars codec; offsets are always checked by the caller.
export {};
declare global {
  interface Buffer {
    latin1Slice(start: number, end: number): string;
    latin1Write(value: string, offset: number, length: number): number;
  }
}
