// uwsgi classic upstreams (a real uWSGI, or `gatewire serve`): one connection
// per request, as uWSGI and NGINX's uwsgi_pass do. The request is the uwsgi
// packet (vars) followed by the raw body; the answer is a raw HTTP/1.x
// response parsed by the codec's HttpResponseParser. connections_per_server
// caps concurrent exchanges per host; more wait in a FIFO.
//
// uwsgi classic frames the body with CONTENT_LENGTH only, so a chunked upload
// of unknown length is buffered first (memory, bounded by max_body) like
// NGINX does with proxy_request_buffering; a known length streams through.
import net from 'node:net';
import { Readable } from 'node:stream';
import type { HttpResponseError, HttpResponseHandler } from '../../protocol/http-response.ts';
import { HttpResponseParser } from '../../protocol/http-response.ts';
import { ProtocolError } from '../../protocol/errors.ts';
import { encodeUwsgiRequest } from '../../protocol/uwsgi.ts';
import type { UpstreamConfig } from '../config.ts';
import { BodyTooLargeError, ClientAbortedError, connectError, HeadersTooLargeError, protocolFailure, timeoutError, type UpstreamError } from '../errors.ts';
import type { Host } from '../hosts.ts';
import { requestVars as requestVarsOf, TimeoutSweeper, type Timed, type Transport, type TransportRequest, type TransportResponse } from './transport.ts';

const PHASE_QUEUED = 0;
const PHASE_CONNECTING = 1;
const PHASE_WAITING = 2;
const PHASE_BODY = 3;
const PHASE_DONE = 4;

interface HostSlots {
  active: number;
  queue: UwsgiExchange[];
}

export class UwsgiTransport implements Transport {
  readonly sweeper = new TimeoutSweeper();
  private readonly slots = new Map<Host, HostSlots>();
  private readonly exchanges = new Set<UwsgiExchange>();
  private closing: (() => void) | null = null;

  readonly cfg: UpstreamConfig;
  constructor(cfg: UpstreamConfig) {
    this.cfg = cfg;
  }

  request(host: Host, req: TransportRequest): Promise<TransportResponse> {
    return new Promise((resolve, reject) => {
      if (req.aborted) {
        reject(new ClientAbortedError());
        return;
      }
      const ex = new UwsgiExchange(this, host, req, resolve, reject);
      this.exchanges.add(ex);
      this.sweeper.add(ex);
      let slots = this.slots.get(host);
      if (slots === undefined) {
        slots = { active: 0, queue: [] };
        this.slots.set(host, slots);
      }
      if (slots.active < this.cfg.connections_per_server) {
        slots.active++;
        void ex.start();
      } else slots.queue.push(ex);
    });
  }

  /** An exchange ended: its slot goes to the next one waiting. */
  done(ex: UwsgiExchange, hadSlot: boolean): void {
    this.exchanges.delete(ex);
    this.sweeper.delete(ex);
    const slots = this.slots.get(ex.host);
    if (slots !== undefined) {
      if (hadSlot) {
        const next = slots.queue.shift();
        if (next !== undefined) void next.start();
        else slots.active--;
      } else {
        const i = slots.queue.indexOf(ex);
        if (i >= 0) slots.queue.splice(i, 1);
      }
    }
    if (this.closing !== null && this.exchanges.size === 0) this.closing();
  }

  closeHost(host: Host): void {
    this.slots.delete(host);
  }

  close(force = false): Promise<void> {
    if (force) for (const ex of [...this.exchanges]) ex.abort(new ClientAbortedError() as UpstreamError);
    if (this.exchanges.size === 0) {
      this.sweeper.stop();
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      this.closing = () => {
        this.sweeper.stop();
        resolve();
      };
    });
  }
}

class UwsgiExchange implements HttpResponseHandler, Timed {
  private phase = PHASE_QUEUED;
  private socket: net.Socket | null = null;
  private parser: HttpResponseParser;
  private body: Readable | null = null;
  /** The response whose head was parsed in the push in progress; handed over once that push ended cleanly. */
  private head: TransportResponse | null = null;
  private lastActivity = Date.now();
  private lastProgress = -1;
  private settled = false;
  private hadSlot = false;
  private paused = false;

  private readonly transport: UwsgiTransport;
  readonly host: Host;
  private readonly req: TransportRequest;
  private readonly resolve: (res: TransportResponse) => void;
  private readonly reject: (err: Error) => void;
  constructor(
    transport: UwsgiTransport,
    host: Host,
    req: TransportRequest,
    resolve: (res: TransportResponse) => void,
    reject: (err: Error) => void,
  ) {
    this.transport = transport;
    this.host = host;
    this.req = req;
    this.resolve = resolve;
    this.reject = reject;
    this.parser = new HttpResponseParser(this, { isHead: req.method === 'HEAD' });
    req.cancel = () => this.abort(new ClientAbortedError() as UpstreamError);
  }

  async start(): Promise<void> {
    this.hadSlot = true;
    if (this.phase === PHASE_DONE) {
      this.transport.done(this, true);
      return;
    }
    this.phase = PHASE_CONNECTING;
    this.lastActivity = Date.now();
    const req = this.req;
    let contentLength: number | undefined;
    let buffered: Buffer[] | null = req.bodyBuffer != null ? [req.bodyBuffer] : null;
    if (buffered === null && req.body !== null && req.headers['content-length'] === undefined) {
      // unknown length: uwsgi needs CONTENT_LENGTH up front
      req.bodyStarted = true;
      try {
        buffered = await bufferBody(req.body, this.transport.cfg.max_body);
      } catch (err) {
        this.fail((err as UpstreamError).code === 'GW_BODY_TOO_LARGE' ? (err as UpstreamError) : (new ClientAbortedError() as UpstreamError));
        return;
      }
      if (this.phase === PHASE_DONE) return;
      contentLength = 0;
      for (const b of buffered) contentLength += b.length;
      this.lastActivity = Date.now();
    }
    const packet = encodeUwsgiRequest(requestVarsOf(req, contentLength));
    if (packet instanceof ProtocolError) {
      this.fail(new HeadersTooLargeError(packet.message) as UpstreamError);
      return;
    }
    const target = this.host.target;
    const socket = target.kind === 'unix' ? net.connect(target.path) : net.connect(target.port, target.host);
    this.socket = socket;
    socket.setNoDelay(true);
    socket.once('connect', () => {
      if (this.phase === PHASE_DONE) return;
      this.phase = PHASE_WAITING;
      this.lastActivity = Date.now();
      if (buffered !== null) {
        socket.cork();
        socket.write(packet);
        for (const b of buffered) socket.write(b);
        socket.uncork();
      } else {
        socket.write(packet);
        if (req.body !== null) this.streamBody(req.body, socket);
      }
    });
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.once('end', () => this.onEof());
    socket.once('error', (err) => this.onSocketError(err));
    socket.once('close', () => this.onSocketError(null));
  }

  private streamBody(body: Readable, socket: net.Socket): void {
    body.on('data', (chunk: Buffer) => {
      this.req.bodyStarted = true;
      if (!socket.write(chunk)) body.pause();
    });
    socket.on('drain', () => body.resume());
    body.once('error', (err) => this.abort((err as UpstreamError).code === 'GW_BODY_TOO_LARGE' ? (err as UpstreamError) : protocolFailure(err, false)));
  }

  private onData(chunk: Buffer): void {
    this.lastActivity = Date.now();
    const err = this.parser.push(chunk);
    // A response is handed over only after the packet that carried its head was parsed to the
    // end: a body already malformed in that packet (a bad chunk size right after the head) is a
    // clean 502 instead of a response that breaks once it was handed out.
    const head = this.head;
    if (head !== null) {
      this.head = null;
      if (err === null) {
        this.settled = true;
        this.resolve(head);
        return;
      }
      this.onParseError(err);
      head.body.destroy();
      return;
    }
    if (err !== null) this.onParseError(err);
  }

  private onEof(): void {
    const err = this.parser.finish();
    if (err !== null) this.onParseError(err);
  }

  private onParseError(err: HttpResponseError): void {
    this.abort(protocolFailure(err));
  }

  private onSocketError(err: Error | null): void {
    if (this.phase === PHASE_DONE) return;
    if (this.phase === PHASE_CONNECTING) {
      this.fail(connectError(err ?? new Error('closed'), true));
      return;
    }
    if (this.phase === PHASE_WAITING) {
      // the request went out: a reset now may come after the app acted
      this.fail(connectError(err ?? new Error('connection closed before a response'), false));
      return;
    }
    // closed mid-body without the parser seeing the end: truncated
    this.abort(protocolFailure(err ?? new Error('connection closed mid-body')));
  }

  onHead(status: number, _reason: string, rawHeaders: string[]): void {
    this.phase = PHASE_BODY;
    const headers: Record<string, string | string[]> = {};
    for (let i = 0; i < rawHeaders.length; i += 2) {
      const name = rawHeaders[i].toLowerCase();
      const prev = headers[name];
      if (prev === undefined) headers[name] = rawHeaders[i + 1];
      else if (typeof prev === 'string') headers[name] = [prev, rawHeaders[i + 1]];
      else prev.push(rawHeaders[i + 1]);
    }
    const body = new Readable({
      read: () => {
        if (this.paused) {
          this.paused = false;
          this.socket?.resume();
        }
      },
      destroy: (err, cb) => {
        if (this.phase !== PHASE_DONE) this.finishExchange(true);
        cb(err);
      },
    });
    // an error between the hand-over and the consumer's listeners must never be an unhandled
    // 'error' (it would take the whole proxy down); the consumer still sees it through destroy()
    body.on('error', noop);
    this.body = body;
    this.head = { statusCode: status, headers, body };
  }

  onBody(chunk: Buffer): void {
    if (this.body !== null && !this.body.push(chunk) && !this.paused) {
      this.paused = true;
      this.socket?.pause();
    }
  }

  onEnd(): void {
    const body = this.body;
    this.finishExchange(false);
    body?.push(null);
  }

  checkTimeout(now: number): void {
    const phase = this.phase;
    if (phase === PHASE_CONNECTING) {
      if (this.socket?.connecting && now - this.lastActivity > this.transport.cfg.timeouts.connect_ms) {
        this.fail(connectError(new Error('connect timeout'), true));
      }
      return;
    }
    if (phase === PHASE_QUEUED) {
      if (now - this.lastActivity > this.req.readTimeoutMs) this.fail(timeoutError('waiting for a free connection'));
      return;
    }
    if (phase === PHASE_BODY) {
      // a paused socket or a moving client means the client is the slow side
      const progress = this.req.progress?.() ?? 0;
      if (this.paused || progress !== this.lastProgress) {
        this.lastProgress = progress;
        this.lastActivity = now;
        return;
      }
    }
    if ((phase === PHASE_WAITING || phase === PHASE_BODY) && now - this.lastActivity > this.req.readTimeoutMs) {
      if (phase === PHASE_WAITING) this.fail(timeoutError('no response head'));
      else this.abort(timeoutError('no body bytes'));
    }
  }

  /** Fails the exchange: rejects if the head was not delivered, else errors the body. */
  abort(err: UpstreamError): void {
    if (this.phase === PHASE_DONE) return;
    if (!this.settled) {
      this.fail(err);
      return;
    }
    const body = this.body;
    this.finishExchange(true);
    body?.destroy(err);
  }

  private fail(err: Error): void {
    if (this.phase === PHASE_DONE) return;
    const settled = this.settled;
    this.settled = true;
    this.finishExchange(true);
    if (!settled) this.reject(err);
  }

  private finishExchange(destroySocket: boolean): void {
    if (this.phase === PHASE_DONE) return;
    const queued = this.phase === PHASE_QUEUED;
    this.phase = PHASE_DONE;
    this.req.cancel = null;
    const socket = this.socket;
    this.socket = null;
    if (socket !== null) {
      // one request per connection: uWSGI closes after the response anyway
      if (destroySocket) socket.destroy();
      else socket.end();
      socket.on('error', noop);
    }
    this.transport.done(this, !queued && this.hadSlot);
  }
}

function noop(): void {}

/** Reads a whole body into memory, failing with 413 past `max`. */
function bufferBody(body: Readable, max: number): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    body.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) {
        body.destroy(new BodyTooLargeError(max));
        return;
      }
      chunks.push(chunk);
    });
    body.once('end', () => resolve(chunks));
    body.once('error', reject);
    body.once('close', () => {
      if (!body.readableEnded) reject(new ClientAbortedError());
    });
  });
}
