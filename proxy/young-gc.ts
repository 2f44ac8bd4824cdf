// Young-generation collections paced by buffer bytes, in the proxy process.
//
// Why: a proxy relaying bodies allocates a 64 KiB ArrayBuffer per socket read
// (Node's HTTP server for uploads, the upstream connection for responses)
// while it allocates few JavaScript objects, so its young generation rarely
// fills and scavenges almost never run. The buffers' bytes are external
// memory, and V8 answers external memory growth with full mark-compacts:
// under 1 MiB POSTs (`wrk -c64`, `--trace-gc`) the proxy ran 40-49
// mark-compacts and 4 scavenges in 4 s, with 3-17 ms pauses, and concurrent
// marking was about a quarter of its CPU (perf). A scavenge frees those
// buffers just as well, at a fraction of the cost, once they are dead (the
// bin's --no-concurrent-array-buffer-sweeping frees them within it).
// Interleaved runs, same proxy with and without a minor GC every 20 ms:
// proxy CPU 1,155 / 1,586 -> 858 / 889 µs per POST, mark-compacts 49 / 40 ->
// 6 / 2, peak RSS 232 / 227 -> 177 / 184 MiB.
//
// So once external memory has grown by YOUNG_GC_BYTES since the last
// collection, the proxy asks V8 for a minor GC itself. The figure is V8's own
// external-memory count (v8.getHeapStatistics(), which counts the buffers'
// backing stores and is what V8's full-GC trigger looks at), not
// process.memoryUsage(): that one also reads /proc/self/stat for the RSS,
// which under load took 0.4 ms a call here (420 µs mean over 6 s of Express
// requests, against 11 µs for the heap statistics) and showed up as 2.3 % of
// the proxy's CPU in a --cpu-prof at 50 checks a second. V8 has no public call
// for that; its `gc` extension (`--expose-gc`) takes `{ type: 'minor' }`. The
// flag is set at run time and the function taken from a fresh context, so the
// proxy's own global scope gets no `gc`. An idle proxy does one cheap check
// per tick and collects nothing. test/proxy-young-gc-frees-read-buffers.test.ts
// fails loudly if a Node or V8 upgrade takes this away.
import v8 from 'node:v8';
import vm from 'node:vm';

/** How often ArrayBuffer memory is looked at. */
const CHECK_MS = 20;
/** Growth of external memory since the last collection that asks for a minor GC (a few hundred 64 KiB reads). */
export const YOUNG_GC_BYTES = 16 * 1024 * 1024;

type MinorGc = (options: { type: 'minor' }) => void;

let minorGc: MinorGc | null = null;

/** V8's gc function, taken from a new context with --expose-gc set at run time. Throws if V8 no longer offers it. */
export function v8MinorGc(): MinorGc {
  if (minorGc !== null) return minorGc;
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('typeof gc === "function" ? gc : null') as MinorGc | null;
  if (gc === null) throw new Error('V8 gave no gc function with --expose-gc set at run time: young collections cannot be paced');
  minorGc = gc;
  return gc;
}

/** Bytes held outside the V8 heap that V8 knows of: buffers' backing stores among them. */
export function externalMemory(): number {
  return v8.getHeapStatistics().external_memory;
}

/**
 * Starts pacing young collections; returns the function that stops it. The timer is unref'd: it
 * never keeps the process alive.
 */
export function startYoungGc(thresholdBytes = YOUNG_GC_BYTES): () => void {
  const gc = v8MinorGc();
  let base = externalMemory();
  const timer = setInterval(() => {
    const now = externalMemory();
    if (now - base >= thresholdBytes) {
      gc({ type: 'minor' });
      base = externalMemory();
    } else if (now < base) base = now;
  }, CHECK_MS);
  timer.unref();
  return () => clearInterval(timer);
}
