// The proxy paces young collections itself (proxy/young-gc.ts) through V8's
// gc extension, enabled at run time: if a Node or V8 upgrade takes that away,
// these fail, instead of the proxy silently going back to a mark-compact per
// ~80 MB of relayed bodies.
import assert from 'node:assert/strict';
import { constants, PerformanceObserver } from 'node:perf_hooks';
import { test } from 'node:test';
import { externalMemory, startYoungGc, v8MinorGc } from '../proxy/young-gc.ts';

function gcKinds(during: () => Promise<void> | void): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const kinds: number[] = [];
    const obs = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) kinds.push((e as unknown as { detail: { kind: number } }).detail.kind);
    });
    obs.observe({ entryTypes: ['gc'] });
    Promise.resolve(during())
      .then(() => new Promise((r) => setTimeout(r, 50)))
      .then(() => {
        obs.disconnect();
        resolve(kinds);
      }, reject);
  });
}

test("V8's minor gc is reachable without a global gc, and frees dead read buffers", async () => {
  const gc = v8MinorGc();
  assert.equal(typeof gc, 'function');
  assert.equal((globalThis as { gc?: unknown }).gc, undefined, 'the proxy scope gets no global gc');
  let garbage: Buffer[] | null = [];
  for (let i = 0; i < 200; i++) garbage.push(Buffer.allocUnsafe(64 * 1024));
  garbage = null;
  const before = externalMemory();
  const beforeBuffers = process.memoryUsage().arrayBuffers;
  const kinds = await gcKinds(() => gc({ type: 'minor' }));
  assert.ok(kinds.includes(constants.NODE_PERFORMANCE_GC_MINOR), `a minor collection ran: kinds ${kinds}`);
  assert.ok(kinds.every((k) => k === constants.NODE_PERFORMANCE_GC_MINOR), `and nothing else: kinds ${kinds}`);
  const after = externalMemory();
  const afterBuffers = process.memoryUsage().arrayBuffers;
  assert.ok(beforeBuffers - afterBuffers >= 10 * 1024 * 1024, `12.5 MiB of dead 64 KiB buffers freed: ${beforeBuffers} -> ${afterBuffers} bytes`);
  // the pacer's figure saw them go too: it is the count the pacing is decided on
  assert.ok(before - after >= 10 * 1024 * 1024, `V8's external memory fell with them: ${before} -> ${after} bytes`);
});

test('startYoungGc runs a minor collection once buffer memory has grown by the threshold', async () => {
  const stop = startYoungGc(4 * 1024 * 1024);
  try {
    const kinds = await gcKinds(async () => {
      // 8 MiB of short-lived 64 KiB buffers, as socket reads leave them
      for (let i = 0; i < 128; i++) Buffer.allocUnsafe(64 * 1024).fill(i);
      await new Promise((r) => setTimeout(r, 100));
    });
    assert.ok(kinds.includes(constants.NODE_PERFORMANCE_GC_MINOR), `a minor collection followed the growth: kinds ${kinds}`);
  } finally {
    stop();
  }
});
