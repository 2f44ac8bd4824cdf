#!/usr/bin/env -S node --max-semi-space-size=4 --no-maglev --no-allocation-site-pretenuring --no-concurrent-array-buffer-sweeping
// Entry point of the `gatewire` command, and of every worker it forks (they
// run this file again, so they make the same choice of code):
// - dist/ (tsc output, built by `npm install`/`npm run build`) whenever no
//   source listed in its build manifest changed since the build: plain
//   JavaScript, so no process pays for a TypeScript loader or Node's stripper;
// - otherwise the .ts sources: natively where Node strips types, through tsx
//   on Node 20 (see typescript-loader.js). A stale dist/ is never run.
// The production image ships only dist/.
// The shebang's V8 flags are the memory settings explained in
// cli/node-flags.ts, which gives the same flags to the processes gatewire starts.
// node:fs from process.getBuiltinModule, not `import`: an ES import of a
// builtin builds its ES module facade, which reads every export and so loads
// fs/promises, streams and readline into every process (~2.5 MiB of RSS; the
// appserver master's whole budget above a bare Node is a few MiB).
const { readFileSync, statSync } = process.getBuiltinModule('node:fs');

// Paths as strings, not URLs: fs converts a URL with fileURLToPath on every
// call, and a stat per built file made that hot enough for V8's optimizing
// compilers where the command line left them on (`node bin/gatewire.js`).
const root = `${import.meta.dirname ?? decodeURIComponent(new URL('.', import.meta.url).pathname)}/../`;

const sourcesPresent = statSync(`${root}cli/main.ts`, { throwIfNoEntry: false }) !== undefined;

function distIsCurrent() {
  let manifest;
  try {
    manifest = JSON.parse(readFileSync(`${root}dist/build-manifest.json`, 'utf8'));
  } catch {
    return false;
  }
  // a source changed or removed since the build makes the whole build stale
  return manifest.files.every((file) => (statSync(root + file, { throwIfNoEntry: false })?.mtimeMs ?? Infinity) <= manifest.builtAt);
}

if (!sourcesPresent || distIsCurrent()) {
  await import(new URL('../dist/cli/main.js', import.meta.url).href);
} else {
  await import('./typescript-loader.js');
  await import(new URL('../cli/main.ts', import.meta.url).href);
}
