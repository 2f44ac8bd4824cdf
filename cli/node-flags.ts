// Node flags for the gatewire processes that gatewire itself starts (the
// proxy and appserver under `gatewire up`, appserver workers). bin/gatewire.js
// carries the same flag in its shebang for the process a user starts.
//
// --max-semi-space-size=4 (2 for appserver workers, below): a small young generation. Node 24 sizes it from the
// machine's memory (up to 64 MB per semi-space on this 24 GiB machine); a
// proxy under load then holds 128 MB of young generation (measured: proxy RSS
// under `wrk -c64` 305–357 MB with Node 24's default, 228–255 MB capped at 16).
// Down to 4: once per-request objects stopped surviving scavenges (see
// protocol/stream-table.ts), a scavenge costs little, and scavenging often is
// what frees the 64 KiB socket-read buffers while they are still young: with
// a larger young generation they outlive it and only the full collections
// that their external memory triggers free them. Proxy, 3 interleaved rounds
// each against 16: 1 MiB POST 1,023–1,362 µs/request against 1,484–1,831
// (req/s 667–721 against 395–550), hello and 64 KiB the same CPU (25–31 vs
// 26–28, 68–78 vs 70–77 µs), peak RSS 125–177 against 160–202 MiB; an
// appserver worker under 1 MiB POSTs 140–143 against 165–181 MiB at the same
// CPU, and 5 % more CPU on an Express list (20–21 against 19 µs). 8 gave the
// POST nothing; 2 nothing more than 4 (proxy).
// The proxy stays at 4: with 2, in the quiet-machine bench at 058710d and in 3
// interleaved rounds after it, hello cost the proxy 30-34 against 26-27
// µs/request and its p99 rose from 3.8-4.2 to 4.4-8.5 ms (twice the scavenges,
// each copying the requests in flight). Appserver workers get 2: see
// WORKER_SEMI_SPACE.
//
// --no-maglev leaves V8's mid-tier JIT out (Sparkplug, then TurboFan): its code
// and compiler zones cost a busy proxy ~16 MB of RSS on Node 24 (anonymous
// memory 66 vs 82 MB after 2,000 requests), and 3 interleaved rounds of
// `wrk -c32` through `gatewire up` measured proxy CPU 74–80 µs/request
// without it against 75–96 with it: a long-running server lives in TurboFan
// code, and Maglev only shortens the warm-up.
//
// --no-allocation-site-pretenuring: under load V8 found the proxy's
// per-request objects alive at a scavenge (requests in flight), judged their
// allocation sites long-lived and allocated them straight in the old
// generation; from there they kept every request's young objects alive
// through each scavenge until the next full GC. A quarter of the young
// generation survived every scavenge (the Node peer: under 1 %) and GC took
// 20 % of the proxy. Measured on hello through `gatewire proxy` with
// `--trace-gc-nvp`/`--trace-pretenuring`: survival 25 % -> 4 %, proxy CPU
// 47 -> 38 µs/request, 17.3k -> 22.8k req/s (3 interleaved rounds). It must be
// on the command line: v8.setFlagsFromString at startup leaves the heap's
// setting as it was (measured: survival unchanged).
//
// --no-concurrent-array-buffer-sweeping: V8 frees the ArrayBuffers a
// scavenge found dead on a background task, and until that task has run they
// still count as external memory; on a busy 2-core machine it runs late, the
// next allocations push external memory over V8's limit, and a full mark-compact
// frees what the scavenge already had (`--trace-gc`, appserver worker answering
// a 64 KiB ArrayBuffer per request: 125 scavenges and 65 mark-compacts,
// external memory 30–37 MB at each; GC 57 % of the worker on
// `request.arrayBuffer()`). Freeing them within the scavenge, on the thread
// that counts them anyway: bench/shapes.ts, two interleaved pairs of runs on
// the shared machine, worker CPU µs/request without → with: Fetch ArrayBuffer
// 64 KiB 62/68 → 23/24, POST 64 KiB arrayBuffer() 58/66 → 29/25, POST 1 MiB
// getReader() 581/514 → 318/341, for await 627/509 → 354/284, hello and
// Express unchanged.
//
// A flag the user gave (in NODE_OPTIONS or on the command line) wins.
const FLAGS: Array<[name: string, flag: string]> = [
  ['max-semi-space-size', '--max-semi-space-size=4'],
  ['maglev', '--no-maglev'],
  ['allocation-site-pretenuring', '--no-allocation-site-pretenuring'],
  ['concurrent-array-buffer-sweeping', '--no-concurrent-array-buffer-sweeping'],
];

export function childNodeFlags(): string[] {
  const own = process.execArgv;
  const userOptions = process.env.NODE_OPTIONS ?? '';
  const added = FLAGS.filter(([name]) => !own.some((f) => f.includes(name)) && !userOptions.includes(name)).map(([, flag]) => flag);
  return [...own, ...added];
}

// An appserver worker's young generation: 2 MB semi-spaces instead of 4.
// A worker's garbage is mostly body bytes: the 64 KiB ArrayBuffers of socket
// reads and the chunks handed to the app, freed by a scavenge while young or
// else only by the full collections their external memory triggers, and the
// pages glibc gave them stay in the worker's RSS after the burst. Scavenging
// twice as often frees them sooner. `npm run bench:memory -- --rounds 3`, two
// interleaved runs each on a shared machine, medians: peak after the mixed
// load 124.7 / 126.9 MiB against 152.6 / 144.5, during a 1 GiB download
// 124.4 / 127.3 against 145.8 / 144.7, during a 1 GiB upload 134.3 / 139.8
// against 171.6 / 163.0 (every round of 6 under 143 MiB; none with 4). The
// price, `npm run bench:shapes -- --rounds 3`, same runs: a 1 MiB body read
// with `for await` 630–690 against 566–583 µs per request, `req.on('data')`
// 533–635 against 502–516; hello, 64 KiB, Express and small bodies the same.
// With --no-concurrent-array-buffer-sweeping as well (bench/shapes.ts, two
// interleaved pairs): POST 1 MiB req.on('data') 627/434 → 227/236 µs/request
// (node:http 380–538). 3 measured like 4 (V8 rounds the size); the proxy
// keeps 4 (see above).
const WORKER_SEMI_SPACE: [name: string, flag: string] = ['max-semi-space-size', '--max-semi-space-size=2'];

/** childNodeFlags() for `gatewire serve`'s workers: the worker's young generation, unless the user chose one. */
export function appWorkerNodeFlags(): string[] {
  const [name, flag] = WORKER_SEMI_SPACE;
  const ours = FLAGS.find(([n]) => n === name)![1];
  if ((process.env.NODE_OPTIONS ?? '').includes(name)) return childNodeFlags();
  // Ours (the shebang's or the one added above) is replaced; a different value on the command line is the user's.
  return childNodeFlags().map((f) => (f === ours ? flag : f));
}
