// Node flags for the gatewire processes that gatewire itself starts (the
// proxy and appserver under `gatewire up`, appserver workers). bin/gatewire.js
// carries the same flag in its shebang for the process a user starts.
//
// --max-semi-space-size=16 caps V8's young generation at Node 20's default.
// Node 24 sizes it from the machine's memory (up to 64 MB per semi-space on
// this 24 GiB machine), and a proxy under load then holds 128 MB of young
// generation: measured here, proxy RSS under `wrk -c64` 305–357 MB with
// Node 24's default against 228–255 MB with the cap, for a scavenge more often.
//
// --no-maglev leaves V8's mid-tier JIT out (Sparkplug, then TurboFan): its code
// and compiler zones cost a busy proxy ~16 MB of RSS on Node 24 (anonymous
// memory 66 vs 82 MB after 2,000 requests), and 3 interleaved rounds of
// `wrk -c32` through `gatewire up` measured proxy CPU 74–80 µs/request
// without it against 75–96 with it: a long-running server lives in TurboFan
// code, and Maglev only shortens the warm-up.
//
// A flag the user gave (in NODE_OPTIONS or on the command line) wins.
const FLAGS: Array<[name: string, flag: string]> = [
  ['max-semi-space-size', '--max-semi-space-size=16'],
  ['maglev', '--no-maglev'],
];

export function childNodeFlags(): string[] {
  const own = process.execArgv;
  const userOptions = process.env.NODE_OPTIONS ?? '';
  const added = FLAGS.filter(([name]) => !own.some((f) => f.includes(name)) && !userOptions.includes(name)).map(([, flag]) => flag);
  return [...own, ...added];
}
