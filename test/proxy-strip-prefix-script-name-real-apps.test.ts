// An app mounted under a prefix knows it: behind `strip_prefix`, a real uWSGI
// + Flask gets SCRIPT_NAME (so request.script_root and url_for carry the
// prefix), gunicorn + Flask gets X-Forwarded-Prefix (what werkzeug's ProxyFix
// reads), and the bare prefix is redirected with 301 as NGINX does.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { call, startGunicornFlask, startProxy, startUwsgiFlask } from './helpers/proxy-harness.ts';

type FlaskEcho = { path: string; headers: Record<string, string>; environ: Record<string, string> };

test('strip_prefix: uWSGI + Flask sees SCRIPT_NAME, gunicorn + Flask sees X-Forwarded-Prefix; /flask → 301 /flask/', { timeout: 90000 }, async (t) => {
  const uwsgi = await startUwsgiFlask(t, 'uwsgi');
  const gunicorn = await startGunicornFlask(t, 'gunicorn');
  const proxy = await startProxy(t, {
    routes: [
      { match: { path_prefix: '/flask/' }, upstream: 'u', strip_prefix: true },
      { match: { path_prefix: '/gunicorn/' }, upstream: 'g', strip_prefix: true },
    ],
    upstreams: { u: { protocol: 'uwsgi', servers: [uwsgi.address] }, g: { protocol: 'http', servers: [gunicorn.address] } },
  });
  const u = (await call(`${proxy.url}/flask/items/7?x=1`)).json<FlaskEcho>();
  assert.equal(u.environ.SCRIPT_NAME, '/flask');
  assert.equal(u.environ.PATH_INFO, '/items/7');
  assert.equal(u.path, '/items/7');
  const g = (await call(`${proxy.url}/gunicorn/items/7`)).json<FlaskEcho>();
  assert.equal(g.headers['X-Forwarded-Prefix'], '/gunicorn');
  assert.equal(g.path, '/items/7');
  const bare = await call(`${proxy.url}/flask?x=1`);
  assert.equal(bare.status, 301);
  assert.equal(bare.headers.location, '/flask/?x=1');
});
