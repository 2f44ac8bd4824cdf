// A real DNS server for the DNS discovery tests: Debian's dnsmasq on an
// unprivileged loopback port, answering from a hosts file the test rewrites
// (SIGHUP makes dnsmasq re-read it and drop its cache).
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { freePort, tempDir } from './net.ts';
import { type Proc, startProcess } from './procs.ts';
import { requireTool } from './tools.ts';

export interface Dnsmasq {
  port: number;
  /** "127.0.0.1:PORT", for resolver.servers. */
  server: string;
  proc: Proc;
  /** Replaces the hosts file and waits until dnsmasq has re-read it. */
  setHosts(lines: string[]): Promise<void>;
  stop(): Promise<void>;
}

export async function startDnsmasq(initial: string[], domain = 'test'): Promise<Dnsmasq> {
  const bin = requireTool('dnsmasq');
  const { dir, cleanup } = tempDir('gw-dns-');
  const hostsFile = path.join(dir, 'hosts');
  writeFileSync(hostsFile, `${initial.join('\n')}\n`);
  const port = await freePort();
  const proc = startProcess(bin, [
    '--no-daemon',
    '--conf-file=/dev/null', // ignore /etc/dnsmasq.conf and conf-dir
    `--port=${port}`,
    '--listen-address=127.0.0.1',
    '--bind-interfaces',
    '--no-resolv',
    '--no-hosts',
    `--addn-hosts=${hostsFile}`,
    // Names under .test are answered from the hosts file only: a missing name is NXDOMAIN, a missing AAAA is NODATA.
    `--local=/${domain}/`,
    '--local-ttl=0',
    '--log-queries',
    '--log-facility=-',
    '--pid-file=',
    // As root dnsmasq would switch to nobody, who cannot read the 0700 temp dir on reload.
    ...(process.getuid?.() === 0 ? ['--user=root'] : []),
  ]);
  let reads = 0;
  const readsSoFar = () => (proc.output().match(new RegExp(`read ${hostsFile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`, 'g')) ?? []).length;
  await proc.waitFor(/started, version/, 10_000);
  await proc.waitFor(/read .*hosts/, 10_000);
  reads = readsSoFar();
  return {
    port,
    server: `127.0.0.1:${port}`,
    proc,
    async setHosts(lines) {
      writeFileSync(hostsFile, `${lines.join('\n')}\n`);
      proc.kill('SIGHUP');
      const want = reads + 1;
      const deadline = Date.now() + 10_000;
      while (readsSoFar() < want) {
        if (Date.now() > deadline) throw new Error(`dnsmasq did not re-read ${hostsFile}:\n${proc.output().slice(-2000)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      reads = readsSoFar();
    },
    async stop() {
      await proc.stop(3000);
      cleanup();
    },
  };
}
