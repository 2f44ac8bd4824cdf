// The open streams of a session by id: an open-addressing hash table on a
// typed array of ids, written by hand instead of a JS Map for the garbage
// collector's sake. A session adds and deletes one id per request for as long
// as it lives, and V8 rebuilds a Map's table every few dozen such pairs,
// linking each discarded table to its successor (so that iterators can
// follow). Once one table of the chain is in the old generation, every later
// table, and every stream and request object they ever held, survives each
// scavenge until the next full GC: measured with `--trace-gc-nvp` on a client
// session with 64 requests in flight, 25 % of the young generation survived
// every scavenge with a Map and 0.5 % with this table; the proxy's GC share
// fell with it. Rebuilding here replaces two arrays and links nothing.
//
// Stream ids are positive 31-bit integers handed out in increasing order, so
// `id & mask` spreads consecutive ids over consecutive slots; 0 marks an empty
// slot and -1 a deleted one.
const EMPTY = 0;
const DELETED = -1;
const MIN_CAPACITY = 16;

export class StreamTable<T> {
  private ids: Int32Array;
  private values: Array<T | undefined>;
  private mask: number;
  /** Live entries. */
  private count = 0;
  /** Live entries plus deleted markers: probes stop only at an empty slot, so this bounds their length. */
  private filled = 0;

  constructor(capacity = MIN_CAPACITY) {
    let size = MIN_CAPACITY;
    while (size < capacity * 2) size *= 2;
    this.ids = new Int32Array(size);
    this.values = new Array<T | undefined>(size).fill(undefined);
    this.mask = size - 1;
  }

  get size(): number {
    return this.count;
  }

  get(id: number): T | undefined {
    const ids = this.ids;
    const mask = this.mask;
    let i = id & mask;
    for (;;) {
      const k = ids[i];
      if (k === id) return this.values[i];
      if (k === EMPTY) return undefined;
      i = (i + 1) & mask;
    }
  }

  has(id: number): boolean {
    return this.get(id) !== undefined;
  }

  /** Adds or replaces; `id` must be in 1..2^31-1 and `value` not undefined. */
  set(id: number, value: T): void {
    const ids = this.ids;
    const mask = this.mask;
    let i = id & mask;
    let reuse = -1;
    for (;;) {
      const k = ids[i];
      if (k === id) {
        this.values[i] = value;
        return;
      }
      if (k === EMPTY) break;
      if (k === DELETED && reuse < 0) reuse = i;
      i = (i + 1) & mask;
    }
    if (reuse >= 0) {
      ids[reuse] = id;
      this.values[reuse] = value;
      this.count++;
      return;
    }
    ids[i] = id;
    this.values[i] = value;
    this.count++;
    // at most 3/4 of the slots in use (live or deleted), so every probe meets an empty slot soon
    if (++this.filled * 4 > ids.length * 3) this.rebuild();
  }

  delete(id: number): boolean {
    const ids = this.ids;
    const mask = this.mask;
    let i = id & mask;
    for (;;) {
      const k = ids[i];
      if (k === id) {
        ids[i] = DELETED;
        this.values[i] = undefined;
        this.count--;
        return true;
      }
      if (k === EMPTY) return false;
      i = (i + 1) & mask;
    }
  }

  /** The live values in id order (teardown and GOAWAY walk them oldest first, as a Map would). */
  valuesArray(): T[] {
    const order: number[] = [];
    const ids = this.ids;
    for (let i = 0; i < ids.length; i++) if (ids[i] > 0) order.push(i);
    order.sort((a, b) => ids[a] - ids[b]);
    return order.map((i) => this.values[i] as T);
  }

  clear(): void {
    this.ids.fill(EMPTY);
    this.values.fill(undefined);
    this.count = 0;
    this.filled = 0;
  }

  /** Drops the deleted markers; grows so that live entries fill at most a quarter of the slots. */
  private rebuild(): void {
    const oldIds = this.ids;
    const oldValues = this.values;
    let size = oldIds.length;
    while (this.count * 4 > size) size *= 2;
    const ids = new Int32Array(size);
    const values = new Array<T | undefined>(size).fill(undefined);
    const mask = size - 1;
    for (let j = 0; j < oldIds.length; j++) {
      const id = oldIds[j];
      if (id <= 0) continue;
      let i = id & mask;
      while (ids[i] !== EMPTY) i = (i + 1) & mask;
      ids[i] = id;
      values[i] = oldValues[j];
    }
    this.ids = ids;
    this.values = values;
    this.mask = mask;
    this.filled = this.count;
  }
}
