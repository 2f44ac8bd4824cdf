// Without an engine (the image itself is built and run in
// deploy-compose-scales-on-a-real-engine), this proves the image is built the way
// the test suite builds and runs the code: the Dockerfile's build steps are
// `npm ci` + `npm run build` (the package.json script), the runtime stage
// installs production dependencies only, and running that same build produces
// a dist/ whose CLI, example app and health check work with plain node (no tsx),
// as they must in the image.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { dockerIgnored, lastOf, parseDockerfile, runCommands } from './helpers/deploy-dockerfile.ts';
import { buildImageTree } from './helpers/deploy-image.ts';
import { freePort } from './helpers/net.ts';
import { ROOT, startProcess } from './helpers/procs.ts';
import { requireTool } from './helpers/tools.ts';

const run = promisify(execFile);
const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
const stages = parseDockerfile(readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8'));
const build = stages[0];
const runtime = stages.at(-1)!;

test('the Dockerfile is multi-stage on the current Node LTS slim image', () => {
  assert.ok(stages.length >= 2, 'a build stage and a runtime stage');
  for (const s of stages) assert.match(s.from, /^node:24-slim$/, `stage ${s.name} is FROM ${s.from}`);
  assert.notEqual(build.name, null, 'the build stage is named, for COPY --from');
  const fromBuild = runtime.instructions.filter((i) => i.op === 'COPY' && i.flags.from === build.name);
  assert.ok(
    fromBuild.some((i) => i.args[0].replace(/^\/app\//, '') === 'dist'),
    'the runtime stage copies the compiled dist/ from the build stage',
  );
});

test('build steps are `npm ci` then the package.json build script; the runtime installs production deps only', () => {
  const buildCmds = runCommands(build);
  const ci = buildCmds.findIndex((c) => /^npm ci\b/.test(c));
  const b = buildCmds.indexOf('npm run build');
  assert.ok(ci >= 0, `build stage runs npm ci: ${JSON.stringify(buildCmds)}`);
  assert.ok(b > ci, `build stage runs npm run build after npm ci: ${JSON.stringify(buildCmds)}`);
  assert.doesNotMatch(buildCmds[ci], /--omit=dev|--production/, 'the build needs dev dependencies (typescript)');
  // Every npm script the Dockerfile runs exists, and the build script is the tsc build the tests use.
  for (const c of [...buildCmds, ...runCommands(runtime)]) {
    const m = /^npm run (\S+)/.exec(c);
    if (m) assert.ok(pkg.scripts[m[1]], `package.json has the script ${m[1]}`);
  }
  assert.equal(pkg.scripts.build, 'node bin/build-dist.js');
  // Everything the build compiles is in the build stage (a source directory left out fails only in Docker).
  const included = JSON.parse(readFileSync(path.join(ROOT, 'tsconfig.build.json'), 'utf8').replace(/^\s*\/\/.*$/gm, '')).include as string[];
  const copied = build.instructions.filter((i) => i.op === 'COPY' && !i.flags.from).flatMap((i) => i.args.slice(0, -1));
  for (const dir of included) assert.ok(copied.includes(dir), `the build stage copies ${dir} (tsconfig.build.json includes it)`);
  const runtimeCmds = runCommands(runtime);
  assert.ok(
    runtimeCmds.some((c) => /^npm ci\b.*--omit=dev/.test(c)),
    `runtime stage runs npm ci --omit=dev: ${JSON.stringify(runtimeCmds)}`,
  );
  assert.ok(!runtimeCmds.some((c) => /^npm run build/.test(c)), 'nothing is compiled in the runtime stage');
  // tsx (a TypeScript loader the compiled image never uses) is optional, and the runtime leaves it out.
  assert.ok(pkg.optionalDependencies?.tsx && !pkg.dependencies.tsx, 'tsx is an optional dependency');
  assert.ok(
    runtimeCmds.some((c) => /^npm ci\b.*--omit=optional/.test(c)),
    `runtime stage runs npm ci --omit=optional: ${JSON.stringify(runtimeCmds)}`,
  );
  // The lockfile is what both `npm ci` read, and .ci/run (the test entry point) uses npm ci + npm test too.
  const ciScript = readFileSync(path.join(ROOT, '.ci/run'), 'utf8');
  assert.match(ciScript, /^npm ci\b/m);
  assert.match(ciScript, /^npm test\b/m);
});

test('runtime: NODE_ENV=production, non-root user, tini as PID 1, HEALTHCHECK on a compiled script', () => {
  const env = runtime.instructions.filter((i) => i.op === 'ENV').map((i) => i.raw);
  assert.ok(
    env.some((e) => /(^|\s)NODE_ENV=production(\s|$)/.test(e)),
    `ENV NODE_ENV=production in ${JSON.stringify(env)}`,
  );
  const user = lastOf(runtime, 'USER');
  assert.ok(user, 'a USER instruction');
  assert.doesNotMatch(user.raw, /^(root|0)(:|$)/);
  const entry = lastOf(runtime, 'ENTRYPOINT');
  assert.ok(entry?.json, 'exec-form ENTRYPOINT (so signals reach the process, not a shell)');
  assert.match(entry.json[0], /(^|\/)tini$/);
  assert.ok(
    runCommands(runtime).some((c) => /apt-get install .*\btini\b/.test(c)),
    'tini comes from Debian in the image',
  );
  // node with the shebang's V8 flags (the image runs the bin through node, so the shebang is not read)
  const shebangFlags = readFileSync(path.join(ROOT, 'bin/gatewire.js'), 'utf8').split('\n')[0].split(/\s+/).filter((f) => f.startsWith('--'));
  assert.ok(shebangFlags.length > 0);
  assert.deepEqual(entry.json.slice(1), ['--', 'node', ...shebangFlags, '/app/bin/gatewire.js']);
  assert.equal(lastOf(runtime, 'WORKDIR')?.raw, '/app');
  const hc = lastOf(runtime, 'HEALTHCHECK');
  assert.ok(hc, 'a HEALTHCHECK');
  const hcCmd = JSON.parse(hc.raw.replace(/^CMD\s+/, '')) as string[];
  assert.equal(hcCmd[0], 'node');
  assert.match(hcCmd[1], /^\/app\/dist\/.+\.js$/);
});

test('.dockerignore keeps local builds and node_modules out but lets every COPY source in', () => {
  const ignore = readFileSync(path.join(ROOT, '.dockerignore'), 'utf8').split('\n');
  for (const p of ['node_modules', 'dist', '.git', 'node_modules/fastify/package.json']) assert.ok(dockerIgnored(ignore, p), `${p} is ignored`);
  for (const s of stages) {
    for (const c of s.instructions.filter((i) => i.op === 'COPY' && !i.flags.from)) {
      for (const src of c.args.slice(0, -1)) {
        assert.ok(existsSync(path.join(ROOT, src)), `COPY source ${src} (line ${c.line}) exists`);
        assert.ok(!dockerIgnored(ignore, src), `COPY source ${src} (line ${c.line}) is not excluded by .dockerignore`);
      }
    }
  }
});

test('`npm run build` (the Dockerfile step) yields a dist/ that runs with plain node, as in the image', { timeout: 180_000 }, async (t) => {
  const image = await buildImageTree();
  t.after(image.cleanup);
  // bin/gatewire.js takes the dist/ path when the TypeScript sources are absent, as in the image.
  const version = await run(process.execPath, [path.join(image.app, 'bin/gatewire.js'), 'version'], { cwd: image.app, timeout: 30_000 });
  assert.equal(version.stdout.trim(), `gatewire ${pkg.version}`);
  // Every container path the image's commands name exists in the built tree.
  const hc = lastOf(runtime, 'HEALTHCHECK')!;
  const hcScript = (JSON.parse(hc.raw.replace(/^CMD\s+/, '')) as string[])[1];
  assert.ok(existsSync(image.containerPath(hcScript)), `${hcScript} is built`);
  assert.ok(existsSync(path.join(image.app, 'dist/examples/hello.js')), 'the example app is built (compose runs dist/examples/hello.js)');
  assert.ok(existsSync(path.join(image.app, 'dist/cli/main.js')));
  // The health check fails (exit 1, clear message) when nothing listens: it cannot pass by accident.
  const probe = await run(process.execPath, [image.containerPath(hcScript), 'uwsgi', '127.0.0.1:1', '/'], { timeout: 30_000 }).then(
    () => 0,
    (e: { code: number; stderr: string }) => {
      assert.match(e.stderr, /unhealthy/);
      return e.code;
    },
  );
  assert.equal(probe, 1);
});

test('the image default (tini → gatewire up from dist/) serves, passes its HEALTHCHECK and stops with exit 0 on SIGTERM', { timeout: 240_000 }, async (t) => {
  const image = await buildImageTree();
  t.after(image.cleanup);
  const entry = lastOf(runtime, 'ENTRYPOINT')!.json!;
  const cmd = lastOf(runtime, 'CMD')!.json!;
  assert.deepEqual(cmd.slice(0, 1), ['up']);
  const port = await freePort();
  const adminPort = await freePort();
  // The container's own address (0.0.0.0) becomes loopback; ports move out of the way of anything else.
  const argv = [...entry, ...cmd.map((a) => (a === '0.0.0.0' ? '127.0.0.1' : a)), '--port', String(port), '--admin-port', String(adminPort)];
  const mapped = argv.map((a, i) =>
    i === 0 ? requireTool('tini') : a === 'node' ? process.execPath : a.startsWith('/app/') ? image.containerPath(a) : a,
  );
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: image.root, NODE_ENV: 'production', TMPDIR: image.root, TINI_SUBREAPER: '1' };
  const proc = startProcess(mapped[0], mapped.slice(1), { cwd: image.app, env });
  t.after(() => proc.stop(2000));
  await proc.waitFor(new RegExp(`gatewire is up: open http://127\\.0\\.0\\.1:${port}/`), 90_000);
  const res = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(20_000) });
  assert.equal(res.status, 200);
  assert.equal(await res.text(), 'Hello, world!\n');
  assert.doesNotMatch(proc.output(), /examples\/hello\.ts/, 'the compiled example runs, not the TypeScript source');

  const hc = JSON.parse(lastOf(runtime, 'HEALTHCHECK')!.raw.replace(/^CMD\s+/, '')) as string[];
  const hcEnv = { ...env, GATEWIRE_HEALTHCHECK_URL: `http://127.0.0.1:${adminPort}/healthz` };
  await run(process.execPath, hc.slice(1).map((a) => (a.startsWith('/app/') ? image.containerPath(a) : a)), { cwd: image.app, env: hcEnv, timeout: 30_000 });

  proc.kill('SIGTERM');
  const code = await Promise.race([proc.exited, new Promise((r) => setTimeout(() => r('timeout'), 60_000))]);
  assert.equal(code, 0, proc.output().slice(-3000));
});
