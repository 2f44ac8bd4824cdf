// An upstream that lies (an invalid status, CR/LF/NUL in a header, a
// Content-Length that lies either way, a response larger than announced, a head
// that never ends) never reaches the client malformed: the client gets a clean
// 502 when nothing was sent yet, a truncated connection otherwise — and the
// next request on the same client connection is answered correctly, with none
// of the liar's extra bytes. Checked byte for byte with a strict HTTP/1.1
// reader, for the http transport and for the uwsgi transport.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MISBEHAVIOURS, startLyingHttpUpstream, startLyingUwsgiUpstream } from './helpers/guarantee-fake-upstreams.ts';
import { parseResponses, rawRequest, rawSession, startGuardedProxy, untilResponses } from './helpers/guarantee-stack.ts';

const REQUEST = (path: string) => `GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`;

const lastLines = (out: string) =>
  out
    .split('\n')
    .slice(-6)
    .map((l) => l.slice(0, 400))
    .join('\n');

for (const protocol of ['http', 'uwsgi'] as const) {
  test(`a lying ${protocol} upstream: 502 before anything was sent, a truncated connection after, never a malformed response; the next request on the connection is fine`, { timeout: 90000 }, async (t) => {
    const upstream = protocol === 'http' ? await startLyingHttpUpstream(t) : await startLyingUwsgiUpstream(t);
    const proxy = await startGuardedProxy(t, {
      upstreams: {
        liar: {
          protocol,
          servers: [upstream.address],
          timeouts: { read: '1s' },
          // keep every request on the liar: no passive marking down, no retry elsewhere
          max_fails: 0,
          retries: { tries: 1 },
        },
      },
    });
    const problems: string[] = [];
    for (const [path, m] of Object.entries(MISBEHAVIOURS)) {
      if (proxy.proc.child.exitCode !== null || proxy.proc.child.signalCode !== null) {
        problems.push(`${path}: not tried, the proxy process is gone (exit ${proxy.proc.child.exitCode ?? proxy.proc.child.signalCode}):\n${lastLines(proxy.proc.output())}`);
        break;
      }
      try {
        await oneLie(path, m);
      } catch (err) {
        problems.push(`${path}: ${(err as Error).message}; proxy output:\n${lastLines(proxy.proc.output())}`);
        break;
      }
    }
    assert.deepEqual(problems, [], problems.join('\n'));

    async function oneLie(path: string, m: (typeof MISBEHAVIOURS)[string]): Promise<void> {
      let first: string;
      const r = await rawSession(
        proxy.port,
        (sock) => {
          sock.write(REQUEST(path));
        },
        {
          timeoutMs: 8000,
          until: (data) => {
            const p = parseResponses(data);
            return p.malformed !== null || (p.responses.length >= 1 && p.responses[0].complete);
          },
        },
      );
      const p = parseResponses(r.data);
      if (p.malformed !== null) {
        problems.push(`${path}: malformed response reached the client: ${p.malformed}`);
        return;
      }
      const res = p.responses[0];
      const text = r.data.toString('latin1');
      if (/pwned/.test(text)) problems.push(`${path}: the liar's bytes reached the client: ${JSON.stringify(text.slice(0, 300))}`);
      if (res?.complete) {
        first = `${res.status} ${JSON.stringify(res.body.toString('latin1'))}`;
        const okAnswer =
          m.expect === '504' ? res.status === 504 : res.status === 502 || (m.expect === 'fine-or-502' && res.status === 200 && res.body.toString() === 'fine');
        if (!okAnswer) problems.push(`${path}: expected ${m.expect}, got ${first}`);
      } else {
        first = res ? `truncated ${res.status} after ${res.body.length} body bytes (${r.ended})` : `no response (${r.ended})`;
        if (m.expect !== '502-or-truncated') problems.push(`${path}: expected a complete ${m.expect}, got ${first}`);
        if (r.ended === 'open') problems.push(`${path}: an incomplete response on a connection left open (${first})`);
      }
      // the upstream is still usable for the next client (the same-connection case is the next test)
      const next = await rawRequest(proxy.port, REQUEST('/ok'), { timeoutMs: 8000, until: untilResponses(1) });
      const np = parseResponses(next.data);
      const nr = np.responses[0];
      if (np.malformed !== null || nr?.status !== 200 || nr.body.toString() !== 'fine' || np.rest.length > 0) {
        problems.push(`${path}: the request after it got ${np.malformed ?? `${nr?.status} ${JSON.stringify(next.data.toString('latin1').slice(0, 200))}`}`);
      }
      t.diagnostic(`${protocol} ${path} → ${first}`);
    }
  });

  test(`after each lie from a ${protocol} upstream, the same client connection carries the next request correctly`, { timeout: 90000 }, async (t) => {
    const upstream = protocol === 'http' ? await startLyingHttpUpstream(t) : await startLyingUwsgiUpstream(t);
    const proxy = await startGuardedProxy(t, {
      upstreams: { liar: { protocol, servers: [upstream.address], timeouts: { read: '1s' }, max_fails: 0, retries: { tries: 1 } } },
    });
    const problems: string[] = [];
    // every lie answered completely (the 502s and the honest part of a larger-than-announced response)
    // leaves the client connection usable: pipeline the lie and an honest request in one write
    for (const [path, m] of Object.entries(MISBEHAVIOURS)) {
      if (m.expect === '502-or-truncated') continue;
      if (proxy.proc.child.exitCode !== null || proxy.proc.child.signalCode !== null) {
        problems.push(`${path}: not tried, the proxy process is gone:\n${lastLines(proxy.proc.output())}`);
        break;
      }
      const r = await rawRequest(proxy.port, REQUEST(path) + REQUEST('/ok'), { timeoutMs: 8000, until: untilResponses(2) }).catch((err: Error) => err);
      if (r instanceof Error) {
        problems.push(`${path}: ${r.message}; proxy output:\n${lastLines(proxy.proc.output())}`);
        break;
      }
      const p = parseResponses(r.data);
      if (p.malformed !== null) {
        problems.push(`${path}: ${p.malformed}`);
        continue;
      }
      const [lie, honest] = p.responses;
      if (!lie?.complete) {
        problems.push(`${path}: the first response is incomplete (${r.ended})`);
        continue;
      }
      if (!honest?.complete) {
        problems.push(`${path}: no answer to the next request on the same connection (${lie.status}, then ${r.ended})`);
        continue;
      }
      if (honest.status !== 200 || honest.body.toString() !== 'fine') problems.push(`${path}: the next request got ${honest.status} ${JSON.stringify(honest.body.toString('latin1'))}`);
      if (p.rest.length > 0 || /pwned/.test(r.data.toString('latin1'))) problems.push(`${path}: extra bytes on the client connection: ${JSON.stringify(p.rest.toString('latin1'))}`);
    }
    assert.deepEqual(problems, [], problems.join('\n'));
  });
}
