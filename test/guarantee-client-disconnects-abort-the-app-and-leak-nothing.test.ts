// A client that goes away mid-download or mid-upload: the app's abort signal
// fires, the upstream stream is reset, and nothing is left behind. 1,000 such
// cycles (half downloads, half uploads; half closed with FIN, half with RST),
// then: every one of them reached the app's abort signal, /status shows no
// request in flight and no client connection, the appserver's stats show no
// request in flight, and the handles by type, open fds and the heap (after a
// full GC) of both the proxy and the appserver are back where they were.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { freePort } from './helpers/net.ts';
import {
  eventually,
  getJson,
  type ProbeReport,
  parseResponses,
  procMemory,
  rawRequest,
  rawSession,
  startApp,
  startGuardedProxy,
} from './helpers/guarantee-stack.ts';

const CYCLES = 1000;
const LANES = 10;

interface AppDebug {
  requests: number;
  aborts: number;
  downloadAborts: number;
  uploadAborts: number;
  resources: Record<string, number>;
  heapUsed: number;
  rss: number;
  fds: number;
}

test('1,000 client disconnects mid-upload and mid-download: every abort reaches the app, in-flight back to 0, no leaked stream, socket, timer or memory', { timeout: 120000 }, async (t) => {
  const statsPort = await freePort();
  const app = await startApp(t, 'A', { gc: true, args: ['--stats', `127.0.0.1:${statsPort}`] });
  const proxy = await startGuardedProxy(t, { upstreams: { app: { servers: [app.address], max_body: '100mb' } } }, { probe: true });

  // /debug through the proxy on a connection that is closed right after (it must not count as a leftover)
  const appDebug = async (): Promise<AppDebug> => {
    const r = await rawRequest(proxy.port, 'GET /debug HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', { timeoutMs: 10000 });
    const res = parseResponses(r.data).responses[0];
    assert.equal(res?.status, 200);
    return JSON.parse(res.body.toString()) as AppDebug;
  };
  const appStats = () => getJson<{ totals: { inflight: number } }>(`http://127.0.0.1:${statsPort}/`);

  const cycle = async (i: number) => {
    const upload = i % 2 === 1;
    const rst = i % 4 >= 2;
    await rawSession(
      proxy.port,
      (sock) => {
        if (upload) {
          // the app answers at once and reports every chunk it consumed: "got" proves the upload is under way
          sock.write(`POST /upload?echo=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n${'u'.repeat(1024)}\r\n`);
        } else sock.write('GET /forever HTTP/1.1\r\nHost: x\r\n\r\n');
      },
      {
        timeoutMs: 15000,
        until: (data) => {
          const p = parseResponses(data);
          const res = p.responses[0];
          return res !== undefined && (upload ? res.body.includes('got ') : res.body.length >= 4096);
        },
        onStop: (sock) => {
          if (rst) sock.resetAndDestroy();
          else sock.destroy();
        },
      },
    ).then((r) => {
      if (r.ended !== 'open') throw new Error(`cycle ${i}: the proxy closed first (${r.ended}): ${r.data.toString('latin1').slice(0, 200)}`);
    });
  };
  const run = async (from: number, count: number) => {
    let next = from;
    await Promise.all(
      Array.from({ length: LANES }, async () => {
        while (next < from + count) await cycle(next++);
      }),
    );
  };
  // until every abort is in, or nothing moves any more with nothing in flight (then the counts tell what is missing)
  const settle = async (expectedAborts: number) => {
    let previous = -1;
    let stableSince = Date.now();
    await eventually(
      async () => {
        const [d, st, as] = await Promise.all([appDebug(), proxy.status(), appStats()]);
        // the /debug request itself is the only thing in flight while it is asked
        const idle = st.upstreams[0].hosts[0].inflight <= 1 && as.totals.inflight <= 1;
        if (d.aborts !== previous) {
          previous = d.aborts;
          stableSince = Date.now();
        }
        return idle && (d.aborts === expectedAborts || Date.now() - stableSince > 2000);
      },
      30000,
      `nothing in flight at the proxy and the appserver after ${expectedAborts} disconnects`,
    );
    // a moment for the last sockets to close on both sides
    await new Promise((r) => setTimeout(r, 300));
  };

  // warm-up: JIT, pools, the kept upstream connections
  await run(0, 100);
  await settle(100);
  const proxyBefore = await proxy.probe();
  const appBefore = await appDebug();
  const memBefore = procMemory(proxy.pid);

  await run(100, CYCLES);
  await settle(100 + CYCLES);
  const appAfter = await appDebug();
  const proxyAfter = await proxy.probe();
  const memAfter = procMemory(proxy.pid);
  const status = await proxy.status();
  const stats = await appStats();

  t.diagnostic(`proxy before ${fmt(proxyBefore)}; after ${fmt(proxyAfter)}; RSS ${mb(memBefore.rss)} → ${mb(memAfter.rss)} MB`);
  t.diagnostic(`appserver before ${fmt(appBefore)}; after ${fmt(appAfter)}`);

  const problems: string[] = [];
  const check = (ok: boolean, what: string) => {
    if (!ok) problems.push(what);
  };
  // every disconnect reached the app's abort signal, by kind
  const downloads = appAfter.downloadAborts - appBefore.downloadAborts;
  const uploads = appAfter.uploadAborts - appBefore.uploadAborts;
  check(downloads === CYCLES / 2, `${CYCLES / 2} mid-download disconnects, ${downloads} aborts reached the app`);
  check(uploads === CYCLES / 2, `${CYCLES / 2} mid-upload disconnects, ${uploads} aborts reached the app`);
  // nothing in flight, no client connection left (the admin /status request is on the admin port)
  check(status.upstreams[0].inflight === 0 && status.upstreams[0].hosts[0].inflight === 0, `proxy in flight: ${JSON.stringify(status.upstreams[0])}`);
  check(status.connections === 0, `${status.connections} client connections left open at the proxy`);
  check(stats.totals.inflight === 0, `${stats.totals.inflight} requests in flight at the appserver`);
  // handles by type, fds and heap are back
  noGrowth('proxy', proxyBefore.resources, proxyAfter.resources, check);
  noGrowth('appserver', appBefore.resources, appAfter.resources, check);
  check(proxyAfter.fds <= proxyBefore.fds + 2, `proxy fds ${proxyBefore.fds} → ${proxyAfter.fds}`);
  check(appAfter.fds <= appBefore.fds + 2, `appserver fds ${appBefore.fds} → ${appAfter.fds}`);
  // 1,000 leaked requests would hold far more than this (each holds buffers, streams and closures)
  check(proxyAfter.heapUsed - proxyBefore.heapUsed < 4 * 1024 * 1024, `proxy heap ${mb(proxyBefore.heapUsed)} → ${mb(proxyAfter.heapUsed)} MB`);
  check(appAfter.heapUsed - appBefore.heapUsed < 4 * 1024 * 1024, `appserver heap ${mb(appBefore.heapUsed)} → ${mb(appAfter.heapUsed)} MB`);
  assert.deepEqual(problems, [], problems.join('\n'));
});

function noGrowth(who: string, before: Record<string, number>, after: Record<string, number>, check: (ok: boolean, what: string) => void): void {
  for (const [kind, n] of Object.entries(after)) {
    // a timer or two may be armed at the moment of measuring (keep-alive, health, gauges)
    const slack = kind === 'Timeout' ? 2 : 0;
    check(n <= (before[kind] ?? 0) + slack, `${who}: ${kind} ${before[kind] ?? 0} → ${n}`);
  }
}

const mb = (n: number) => (n / 1048576).toFixed(1);
const fmt = (r: ProbeReport | AppDebug) => `${JSON.stringify(r.resources)} fds ${r.fds} heap ${mb(r.heapUsed)} MB`;
