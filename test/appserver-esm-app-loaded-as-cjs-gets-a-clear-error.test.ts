// A user's app.ts with `export default` in a folder whose package.json does not
// say "type": "module" is compiled as CommonJS by tsx; Node's own error for that
// is a cryptic require() cycle. The appserver must say what is wrong and the fix.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { tempDir } from './helpers/net.ts';
import { startGatewire } from './helpers/procs.ts';

test('an ES module app loaded as CommonJS fails at start with the fix in the message', { timeout: 30000 }, async (t) => {
  const { dir, cleanup } = tempDir('gw-esm-');
  t.after(cleanup);
  writeFileSync(path.join(dir, 'app.ts'), "export default { fetch: () => new Response('hi') };\n");
  const proc = startGatewire(['serve', path.join(dir, 'app.ts'), '--workers', '0', '--listen', `unix:${dir}/a.sock`], { cwd: dir });
  t.after(() => proc.stop());
  const code = await proc.exited;
  assert.notEqual(code, 0);
  // the message sits in a JSON log line, where its quotes are escaped
  const out = proc.output().replaceAll('\\"', '"');
  assert.match(out, /is an ES module \(export\/import\) but is loaded as CommonJS; add "type": "module" to the nearest package\.json, or name the file \.mts\/\.mjs/);
});
