#!/usr/bin/env node
// Entry point of the `gatewire` command. From a checkout the TypeScript
// sources run through tsx; a production image ships only the tsc output in
// dist/ (see Dockerfile) and runs that.
import { existsSync } from 'node:fs';

const source = new URL('../cli/main.ts', import.meta.url);
if (existsSync(source)) {
  const { register } = await import('tsx/esm/api');
  register();
  await import(source.href);
} else {
  await import(new URL('../dist/cli/main.js', import.meta.url).href);
}
