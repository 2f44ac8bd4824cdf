// A real Apache 2.4 (Debian's apache2) with mod_proxy_uwsgi in front of the
// appserver: a minimal httpd.conf in the test's temp dir (no /etc/apache2),
// one <VirtualHost> per upstream on a free loopback port, run in the
// foreground and stopped with the process.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { freePort, waitForListen } from './net.ts';
import { type Proc, startProcess } from './procs.ts';
import { requireTool } from './tools.ts';

const MODULES = '/usr/lib/apache2/modules';

export interface Apache {
  proc: Proc;
  /** One port per upstream, in the order given. */
  ports: number[];
  stop(): Promise<void>;
}

/** The ProxyPass target of an upstream given as "unix:/path.sock" or "127.0.0.1:port". */
function uwsgiTarget(upstream: string): string {
  return upstream.startsWith('unix:') ? `${upstream}|uwsgi://localhost/` : `uwsgi://${upstream}/`;
}

/** Apache with one virtual host per upstream, each `ProxyPass / uwsgi://...` to it. */
export async function startApache(dir: string, upstreams: string[]): Promise<Apache> {
  const bin = requireTool('apache2');
  const ports: number[] = [];
  for (const _ of upstreams) ports.push(await freePort());
  const run = path.join(dir, 'apache');
  mkdirSync(run, { recursive: true });
  // Started as root, Apache's children switch to User: www-data must then reach the Unix socket.
  const user = process.getuid?.() === 0 ? 'User www-data\nGroup www-data' : '';
  const conf = `
ServerRoot ${run}
ServerName localhost
PidFile ${run}/httpd.pid
DefaultRuntimeDir ${run}
Mutex file:${run}
ErrorLog ${run}/error.log
LogLevel warn
${user}
LoadModule mpm_event_module ${MODULES}/mod_mpm_event.so
LoadModule authz_core_module ${MODULES}/mod_authz_core.so
LoadModule proxy_module ${MODULES}/mod_proxy.so
LoadModule proxy_uwsgi_module ${MODULES}/mod_proxy_uwsgi.so
StartServers 1
ServerLimit 1
ThreadsPerChild 16
MaxRequestWorkers 16
${ports.map((p) => `Listen 127.0.0.1:${p}`).join('\n')}
${upstreams
  .map(
    (u, i) => `<VirtualHost 127.0.0.1:${ports[i]}>
  ProxyPass / ${uwsgiTarget(u)}
  ProxyTimeout 60
</VirtualHost>`,
  )
  .join('\n')}
`;
  const confPath = path.join(run, 'httpd.conf');
  writeFileSync(confPath, conf);
  const proc = startProcess(bin, ['-f', confPath, '-DFOREGROUND']);
  try {
    for (const p of ports) await waitForListen(`127.0.0.1:${p}`, 15000);
  } catch (err) {
    proc.kill('SIGKILL');
    throw new Error(`apache2 did not start: ${(err as Error).message}\n${proc.output()}`);
  }
  return {
    proc,
    ports,
    async stop() {
      // SIGTERM stops the parent and its children; stop() escalates to SIGKILL.
      await proc.stop(5000);
    },
  };
}
