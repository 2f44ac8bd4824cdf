// Sizes and durations as users write them in configs and on command lines, in
// one place for the proxy config, the appserver options and `gatewire up`:
// "512k", "10mb", "1g" (k = 1024, like NGINX) and "500ms", "10s", "1m30s"
// (a bare number is seconds in a config, like NGINX's time values).

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
export const DURATION_RE = /^\s*(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h|d)\s*)+$|^\s*\d+(?:\.\d+)?\s*$/;
const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1024, m: 1024 ** 2, mb: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3 };
export const SIZE_RE = /^\s*\d+(?:\.\d+)?\s*(?:b|k|kb|m|mb|g|gb)?\s*$/i;

/** "500ms", "10s", "2m", "1h", "1m30s", 10 (= seconds) → milliseconds; NaN when malformed. */
export function parseDuration(v: string | number): number {
  if (typeof v === 'number') return v >= 0 ? Math.round(v * 1000) : Number.NaN;
  if (!DURATION_RE.test(v)) return Number.NaN;
  const s = v.trim();
  if (/^\d+(?:\.\d+)?$/.test(s)) return Math.round(Number(s) * 1000);
  let ms = 0;
  for (const m of s.matchAll(/(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)/g)) ms += Number(m[1]) * DURATION_UNITS[m[2]];
  return Math.round(ms);
}

/** "512k", "10mb", "1g", 1024 (= bytes) → bytes (k = 1024, like NGINX); NaN when malformed. */
export function parseSize(v: string | number): number {
  if (typeof v === 'number') return v >= 0 ? Math.floor(v) : Number.NaN;
  if (!SIZE_RE.test(v)) return Number.NaN;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(v)!;
  return Math.floor(Number(m[1]) * SIZE_UNITS[m[2].toLowerCase()]);
}
