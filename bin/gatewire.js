#!/usr/bin/env node
// Entry point of the `gatewire` command, and of every worker it forks (they
// run this file again, so they make the same choice). A checkout runs its .ts
// sources, natively where Node strips types, through tsx elsewhere (see
// typescript-loader.js); it never runs its dist/, which could be older than
// the sources. The production image ships only dist/ (the tsc output), and
// runs that.
//
// Builtins come from process.getBuiltinModule: an ES import of node:fs builds
// its ES module facade, which loads fs/promises, streams and readline into
// every process (~2.5 MiB of RSS).
const { existsSync } = process.getBuiltinModule('node:fs');
// Node's compile cache (22.1+; NODE_COMPILE_CACHE picks the directory,
// NODE_DISABLE_COMPILE_CACHE=1 turns it off) also keeps the type-stripped
// sources: a process that finds them there never loads Node's TypeScript
// stripper, a WebAssembly module of ~17 MB of RSS per process, master and
// workers alike.
const nodeModule = process.getBuiltinModule('node:module');
nodeModule.enableCompileCache?.();

const source = new URL('../cli/main.ts', import.meta.url);
if (existsSync(source)) {
  await import('./typescript-loader.js');
  await import(source.href);
} else {
  await import(new URL('../dist/cli/main.js', import.meta.url).href);
}
// Written now rather than at exit, so that the next process (a worker, a respawn) finds it.
nodeModule.flushCompileCache?.();
