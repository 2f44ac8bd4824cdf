// SIGHUP rolling reload while native clients keep persistent, multiplexed
// sessions busy: each old worker sends GOAWAY, finishes the streams it
// accepted and closes; the clients move to new sessions. Counted: every
// request issued completes with the right answer, exactly once. A stream the
// server refused (above GOAWAY's last stream id, or a session already going
// away: REFUSED_STREAM, retryable — never seen by the app) is re-sent on a new
// session, as the proxy's gatewire transport does; any other failure fails
// the test.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { GatewireSession, StreamResetError } from '../protocol/session.ts';
import type { Vars } from '../protocol/vars.ts';
import { collect, connectTo, requestVars, startServe } from './helpers/appserver-clients.ts';
import { freePort, tempDir } from './helpers/net.ts';

const SESSIONS = 3;
const STREAMS_PER_SESSION = 8;
const RELOADS = 2;

interface Counts {
  issued: number;
  ok: number;
  /** Streams refused by the server (retryable, never processed) and re-sent. */
  refusedRetried: number;
  /** Sessions that ended (GOAWAY or close) and were replaced. */
  sessionsReplaced: number;
  failed: string[];
}

/** A client connection slot: one live session at a time, replaced once the server sends GOAWAY or the connection ends. */
class SessionSlot {
  private current: Promise<GatewireSession> | null = null;
  private readonly address: string;
  private readonly counts: Counts;
  constructor(
    address: string,
    counts: Counts,
  ) {
    this.address = address;
    this.counts = counts;
  }

  get(): Promise<GatewireSession> {
    if (this.current === null) this.current = this.open();
    return this.current;
  }

  private open(): Promise<GatewireSession> {
    const mine: Promise<GatewireSession> = new Promise((resolve, reject) => {
      const sock = connectTo(this.address);
      sock.once('error', reject);
      sock.once('connect', () => {
        sock.off('error', reject);
        const session = new GatewireSession(sock, { role: 'client' });
        session.on('error', () => {});
        const retire = () => {
          if (this.current === mine) {
            this.current = null;
            this.counts.sessionsReplaced++;
          }
        };
        session.once('goaway', retire);
        session.once('close', retire);
        resolve(session);
      });
    });
    return mine;
  }

  async close(): Promise<void> {
    const s = await this.current?.catch(() => null);
    if (s && !s.destroyed) await Promise.race([s.close(), new Promise((r) => setTimeout(r, 5000))]);
    s?.destroy();
  }
}

type Job = { vars: Vars; body: Buffer | null; check: (status: number, body: Buffer) => string | null };

const POST_BODY = Buffer.alloc(20_000, 0x61);
const POST_SHA = createHash('sha256').update(POST_BODY).digest('hex');

const JOBS: Job[] = [
  { vars: requestVars('GET', '/'), body: null, check: (s, b) => (s === 200 && b.toString() === 'Hello, world!\n' ? null : `GET / → ${s} ${b.toString().slice(0, 80)}`) },
  { vars: requestVars('GET', '/slow?ms=30'), body: null, check: (s, b) => (s === 200 && b.toString() === 'slow\n' ? null : `GET /slow → ${s} ${b.toString().slice(0, 80)}`) },
  {
    vars: requestVars('POST', '/echo-length', [], String(POST_BODY.length)),
    body: POST_BODY,
    check: (s, b) => {
      if (s !== 200) return `POST /echo-length → ${s}`;
      const r = JSON.parse(b.toString());
      return r.length === POST_BODY.length && r.sha256 === POST_SHA ? null : `POST /echo-length → ${b.toString()}`;
    },
  },
];

/** One logical request: sent until the server accepts it; its answer must be right. */
async function runJob(slot: SessionSlot, job: Job, counts: Counts): Promise<void> {
  counts.issued++;
  for (let attempt = 0; attempt < 50; attempt++) {
    let session: GatewireSession;
    try {
      session = await slot.get();
    } catch (err) {
      // Connecting never fails while the master holds the listening socket.
      counts.failed.push(`connect: ${(err as Error).message}`);
      return;
    }
    const stream = session.request(job.vars, { endStream: job.body === null });
    const result = collect(stream, 30_000);
    if (job.body !== null) stream.end(job.body);
    try {
      const r = await result;
      const problem = job.check(r.status, r.body);
      if (problem === null) counts.ok++;
      else counts.failed.push(problem);
      return;
    } catch (err) {
      if (err instanceof StreamResetError && err.retryable && err.codeName === 'REFUSED_STREAM') {
        counts.refusedRetried++;
        continue;
      }
      counts.failed.push(`${(err as Error).name} ${(err as { codeName?: string }).codeName ?? ''}: ${(err as Error).message}`);
      return;
    }
  }
  counts.failed.push('refused 50 times in a row');
}

test('SIGHUP rolling reload under load from native clients on persistent multiplexed sessions: no request lost, counted', { timeout: 150_000 }, async (t) => {
  const { dir, cleanup } = tempDir('gw-rl-');
  const statsPort = await freePort();
  const tcpPort = await freePort();
  const addresses = [`unix:${dir}/app.sock`, `127.0.0.1:${tcpPort}`];
  const app = await startServe(['examples/hello.ts', '--listen', addresses[0], '--listen', addresses[1], '--workers', '2', '--stats', `127.0.0.1:${statsPort}`, '--graceful-timeout', '20']);
  const counts: Counts = { issued: 0, ok: 0, refusedRetried: 0, sessionsReplaced: 0, failed: [] };
  const slots = Array.from({ length: SESSIONS }, (_, i) => new SessionSlot(addresses[i % addresses.length], counts));
  t.after(async () => {
    await Promise.all(slots.map((s) => s.close()));
    await app.stop(10_000);
    cleanup();
  });
  const workerPids = async () => {
    const res = await fetch(`http://127.0.0.1:${statsPort}/`);
    return ((await res.json()) as { workers: Array<{ pid: number }> }).workers.map((w) => w.pid);
  };
  const pidsBefore = new Set(await workerPids());

  let running = true;
  const loops = slots.flatMap((slot, s) =>
    Array.from({ length: STREAMS_PER_SESSION }, async (_, i) => {
      let n = s + i;
      while (running) await runJob(slot, JOBS[n++ % JOBS.length], counts);
    }),
  );
  await new Promise((r) => setTimeout(r, 700));
  const okBefore = counts.ok;
  for (let round = 1; round <= RELOADS; round++) {
    const done = app.output().split('rolling reload done').length - 1;
    app.kill('SIGHUP');
    const deadline = Date.now() + 60_000;
    while (app.output().split('rolling reload done').length - 1 <= done) {
      assert.ok(Date.now() < deadline, `rolling reload ${round} did not finish within 60 s:\n${app.output().slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    await new Promise((r) => setTimeout(r, 400));
  }
  running = false;
  await Promise.all(loops);

  const pidsAfter = await workerPids();
  assert.equal(pidsAfter.length, 2);
  for (const pid of pidsAfter) assert.ok(!pidsBefore.has(pid), `worker ${pid} was not replaced`);
  const summary = `${counts.issued} issued, ${counts.ok} ok, ${counts.refusedRetried} refused and re-sent, ${counts.sessionsReplaced} sessions replaced`;
  t.diagnostic(summary);
  assert.deepEqual(counts.failed.slice(0, 5), [], `${counts.failed.length} failed (${summary})`);
  assert.equal(counts.ok, counts.issued, summary);
  assert.ok(counts.ok - okBefore >= 300, `only ${counts.ok - okBefore} requests ran during the reloads (${summary})`);
  // Every session was opened on a worker that has since been replaced: each must have seen GOAWAY or its close.
  assert.ok(counts.sessionsReplaced >= SESSIONS, `the clients never had to leave a session (${summary})`);
});
