// `npm run build` (and `prepare`, so `npm install` in a checkout builds too):
// compiles the sources to dist/ with tsc and records which source files went
// in and when, so bin/gatewire.js runs dist/ only while no source is newer.
// Running plain JavaScript spares every gatewire process Node's TypeScript
// stripper (~17 MB of RSS on Node 24) or tsx (~32 MB on Node 20).
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const optional = process.argv.includes('--if-possible');
const outFlag = process.argv.indexOf('--outDir');
const outDir = outFlag > 0 ? path.resolve(process.argv[outFlag + 1]) : path.join(root, 'dist');

let tsc;
try {
  tsc = createRequire(path.join(root, 'package.json')).resolve('typescript/bin/tsc');
} catch {
  // `npm ci --omit=dev`: no compiler, nothing to build; the bin runs the sources.
  if (optional) process.exit(0);
  throw new Error('typescript is not installed: run npm install first');
}
if (optional && !existsSync(path.join(root, 'cli/main.ts'))) process.exit(0);

const builtAt = Date.now();
execFileSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.build.json'), '--outDir', outDir], { stdio: 'inherit', cwd: root });

const files = [];
const walk = (rel) => {
  for (const entry of readdirSync(path.join(root, rel), { withFileTypes: true })) {
    const child = path.join(rel, entry.name);
    if (entry.isDirectory()) walk(child);
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) files.push(child);
  }
};
for (const entry of readdirSync(outDir, { withFileTypes: true })) {
  if (entry.isDirectory() && existsSync(path.join(root, entry.name))) walk(entry.name);
}
writeFileSync(path.join(outDir, 'build-manifest.json'), `${JSON.stringify({ builtAt, files })}\n`);
