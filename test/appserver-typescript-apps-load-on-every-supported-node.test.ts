// Users write app.ts files of every kind. On a Node that strips types itself
// (22.18+, 24) gatewire runs them with no loader, and falls back to tsx only
// for syntax Node cannot erase (enums, namespaces, parameter properties); on
// Node 20 everything goes through tsx, with its CommonJS hook too, so an ES
// module outside a "type": "module" package still loads.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { requestVars, uwsgiRequest } from './helpers/appserver-clients.ts';
import { tempDir } from './helpers/net.ts';
import { startGatewire } from './helpers/procs.ts';

async function serveOnce(t: import('node:test').TestContext, source: string): Promise<{ body?: string; out: string }> {
  const { dir, cleanup } = tempDir('gw-tsapp-');
  t.after(cleanup);
  writeFileSync(path.join(dir, 'app.ts'), source);
  const sock = `${dir}/a.sock`;
  const proc = startGatewire(['serve', path.join(dir, 'app.ts'), '--workers', '0', '--listen', `unix:${sock}`], { cwd: dir });
  t.after(() => proc.stop());
  const started = await Promise.race([proc.waitFor(/gatewire serve: listening on /, 30000).then(() => true), proc.exited.then(() => false)]);
  if (!started) return { out: proc.output() };
  const res = await uwsgiRequest(`unix:${sock}`, requestVars('GET', '/'));
  return { body: res.body.toString(), out: proc.output() };
}

test('an ES module app.ts in a folder without "type": "module" is served', { timeout: 40000 }, async (t) => {
  const r = await serveOnce(t, "export default { fetch: () => new Response('esm ok') };\n");
  assert.equal(r.body, 'esm ok', r.out);
});

test('an app.ts using an enum and parameter properties (not erasable) is served through the tsx fallback', { timeout: 40000 }, async (t) => {
  const source = [
    "enum Color { Red = 'red' }",
    'class Greeter { constructor(private readonly word: string) {} say() { return this.word + " " + Color.Red; } }',
    'const greeter = new Greeter("enum");',
    // module.exports keeps the file loadable as CommonJS under tsx on Node 20
    'module.exports = { fetch: () => new Response(greeter.say()) };',
    '',
  ].join('\n');
  const r = await serveOnce(t, source);
  assert.equal(r.body, 'enum red', r.out);
});
