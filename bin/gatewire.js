#!/usr/bin/env node
// Entry point of the `gatewire` command, and of every worker it forks (they
// run this file again, so they make the same choice). A checkout runs its .ts
// sources, natively where Node strips types, through tsx elsewhere (see
// typescript-loader.js); it never runs its dist/, which could be older than
// the sources. The production image ships only dist/ (the tsc output), and
// runs that.
import { existsSync } from 'node:fs';

const source = new URL('../cli/main.ts', import.meta.url);
if (existsSync(source)) {
  await import('./typescript-loader.js');
  await import(source.href);
} else {
  await import(new URL('../dist/cli/main.js', import.meta.url).href);
}
