// Interop tests run against real programs from Debian's packages. A missing
// program is a failure, never a skip: .ci/run installs them all, and a test
// that silently skips proves nothing.
import { execFileSync } from 'node:child_process';

const APT_HINT: Record<string, string> = {
  nginx: 'nginx',
  uwsgi: 'uwsgi uwsgi-plugin-python3 python3-flask',
  gunicorn: 'gunicorn python3-flask',
  apache2: 'apache2',
  dnsmasq: 'dnsmasq',
  'redis-server': 'redis-server',
  wrk: 'wrk',
  'docker-compose': 'docker-compose',
  dockerd: 'docker.io',
  containerd: 'docker.io',
  runc: 'docker.io',
  chromium: 'chromium',
};

const SEARCH_PATH = ['/usr/sbin', '/usr/bin', '/sbin', '/bin', '/usr/local/bin', '/usr/local/sbin'];

/** Absolute path of a system program; throws with the apt-get line that installs it. */
export function requireTool(name: string): string {
  const PATH = [...SEARCH_PATH, ...(process.env.PATH ?? '').split(':')].join(':');
  try {
    return execFileSync('sh', ['-c', `command -v ${name}`], { env: { ...process.env, PATH }, encoding: 'utf8' }).trim();
  } catch {
    throw new Error(`${name} is not installed: apt-get install -y ${APT_HINT[name] ?? name} (.ci/run does this)`);
  }
}
