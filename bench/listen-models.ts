// `node --import ./bin/typescript-loader.js bench/listen-models.ts [--workers 2] [--rounds 3] [--duration 3]`
//
// How N Node processes should share one TCP port, measured with the same
// node:http hello server in each model, interleaved rounds, medians:
// - shared: one socket bound by the parent and inherited by every worker,
//   which all accept() on it (what supervisor/supervisor.ts does);
// - shared+single-accept: the same with UV_TCP_SINGLE_ACCEPT=1 (libuv accepts
//   one connection per wake-up and yields, so a busy worker does not take the
//   whole backlog);
// - reusePort: each worker binds its own SO_REUSEPORT socket (Node 22.12+),
//   the kernel hashes each new connection to one of them.
// Two loads: keep-alive (wrk -c64: what a load balancer or browsers do) and a
// new connection per request during which one worker is SIGKILLed and
// respawned (what a crash or a reload does to connections already queued).
import { type ChildProcess, fork } from 'node:child_process';
import http from 'node:http';
import { parseArgs } from 'node:util';
import { bindHandle } from '../supervisor/listen.ts';
import { freePort } from '../test/helpers/net.ts';
import { median } from './lib/stats.ts';
import { runWrk } from './lib/wrk.ts';

type Mode = 'shared' | 'shared+single-accept' | 'reusePort';

if (process.env.LISTEN_MODEL_WORKER) {
  let requests = 0;
  const server = http.createServer((_req, res) => {
    requests++;
    res.end('Hello, World!');
  });
  process.on('message', (msg: { t: string; port?: number }, handle: unknown) => {
    if (msg.t === 'listen') server.listen(handle as never, () => process.send!({ t: 'ready' }));
    else if (msg.t === 'reuse') server.listen({ host: '127.0.0.1', port: msg.port, reusePort: true } as never, () => process.send!({ t: 'ready' }));
    else if (msg.t === 'count') process.send!({ t: 'count', requests });
  });
  process.on('disconnect', () => process.exit(0));
} else {
  const { values } = parseArgs({ options: { workers: { type: 'string' }, rounds: { type: 'string' }, duration: { type: 'string' } } });
  const workers = Number(values.workers ?? 2);
  const rounds = Number(values.rounds ?? 3);
  const durationS = Number(values.duration ?? 3);
  const file = new URL(import.meta.url).pathname;

  async function group(mode: Mode) {
    let handle: Awaited<ReturnType<typeof bindHandle>> | null = null;
    let port: number;
    if (mode === 'reusePort') port = await freePort();
    else {
      handle = await bindHandle({ kind: 'tcp', host: '127.0.0.1', port: 0, text: '127.0.0.1:0' });
      port = handle.port!;
    }
    const spawn = async (): Promise<ChildProcess> => {
      const env = { ...process.env, LISTEN_MODEL_WORKER: '1', ...(mode === 'shared+single-accept' ? { UV_TCP_SINGLE_ACCEPT: '1' } : {}) };
      const child = fork(file, [], { env, execArgv: process.execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      const ready = new Promise<void>((resolve) => child.on('message', (m: { t: string }) => m.t === 'ready' && resolve()));
      if (handle) child.send({ t: 'listen' }, handle.handle as never);
      else child.send({ t: 'reuse', port });
      await ready;
      return child;
    };
    const children: ChildProcess[] = [];
    for (let i = 0; i < workers; i++) children.push(await spawn());
    const counts = () =>
      Promise.all(
        children.map(
          (c) =>
            new Promise<number>((resolve) => {
              const on = (m: { t: string; requests: number }) => {
                if (m.t !== 'count') return;
                c.off('message', on);
                resolve(m.requests);
              };
              c.on('message', on);
              c.send({ t: 'count' });
            }),
        ),
      );
    return {
      port,
      counts,
      async respawn(i: number) {
        children[i].kill('SIGKILL');
        children[i] = await spawn();
      },
      close() {
        for (const c of children) c.kill('SIGKILL');
        handle?.close();
      },
    };
  }

  const modes: Mode[] = ['shared', 'shared+single-accept', 'reusePort'];
  const results = new Map<Mode, { rps: number[]; spread: number[]; churnErrors: number[]; churnRps: number[] }>();
  for (const m of modes) results.set(m, { rps: [], spread: [], churnErrors: [], churnRps: [] });
  for (let round = 1; round <= rounds; round++) {
    for (const mode of modes) {
      const g = await group(mode);
      const url = `http://127.0.0.1:${g.port}/`;
      await runWrk({ url, connections: 64, durationS: 1 });
      const c0 = await g.counts();
      const keep = await runWrk({ url, connections: 64, durationS });
      const c1 = (await g.counts()).map((n, i) => n - c0[i]);
      // the busiest worker's share of the requests: 1/N is perfectly even
      const spread = Math.max(...c1) / Math.max(1, c1.reduce((a, b) => a + b, 0));
      const churn = runWrk({ url, connections: 16, durationS, headers: ['Connection: close'] });
      await new Promise((r) => setTimeout(r, (durationS * 1000) / 3));
      await g.respawn(0);
      const ch = await churn;
      g.close();
      const r = results.get(mode)!;
      r.rps.push(keep.result.rps);
      r.spread.push(spread);
      r.churnErrors.push(ch.result.errors);
      r.churnRps.push(ch.result.rps);
      process.stderr.write(
        `[${round}/${rounds}] ${mode}: keep-alive ${Math.round(keep.result.rps)} req/s, busiest worker ${(spread * 100).toFixed(0)} %; new connections with a worker killed: ${Math.round(ch.result.rps)} req/s, ${ch.result.errors} errors\n`,
      );
    }
  }
  process.stdout.write(`\n| model (${workers} workers, node:http hello) | keep-alive req/s | busiest worker's share | new conn. per request, one worker killed: req/s | errors |\n|:--|--:|--:|--:|--:|\n`);
  for (const [mode, r] of results) {
    process.stdout.write(
      `| ${mode} | ${Math.round(median(r.rps))} | ${(median(r.spread) * 100).toFixed(0)} % | ${Math.round(median(r.churnRps))} | ${median(r.churnErrors)} (${r.churnErrors.join(', ')}) |\n`,
    );
  }
}
