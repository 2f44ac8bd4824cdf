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
import { ProtocolError } from '../../protocol/errors.ts';
import type { HttpResponseError, HttpResponseHandler } from '../../protocol/http-response.ts';
import { HttpResponseParser } from '../../protocol/http-response.ts';
import { encodeUwsgiRequest } from '../../protocol/uwsgi.ts';
import { readWholeBody } from '../body.ts';
import type { UpstreamConfig } from '../config.ts';
import { ClientAbortedError, connectError, HeadersTooLargeError, protocolFailure, type UpstreamError } from '../errors.ts';
import type { Host } from '../hosts.ts';
import { HostQueue, PHASE_BODY, PHASE_CONNECTING, PHASE_DONE, PHASE_HEAD, TimeoutSweeper, TransportExchange } from './base.ts';
import { requestVars, type Transport, type TransportRequest, type TransportResponse } from './transport.ts';

interface HostSlots {
  active: number;
  readonly waiting: HostQueue<UwsgiExchange>;
}

export class UwsgiTransport implements Transport {
  readonly sweeper = new TimeoutSweeper<UwsgiExchange>();
  private readonly slots = new Map<Host, HostSlots>();
  private closing: (() => void) | null = null;

  readonly cfg: UpstreamConfig;
  constructor(cfg: UpstreamConfig) {
    this.cfg = cfg;
  }

  request(host: Host, req: TransportRequest): Promise<TransportResponse> {
    return new Promise((resolve, reject) => {
      if (req.signal.aborted) {
        reject(new ClientAbortedError());
        return;
      }
      const ex = new UwsgiExchange(this, host, req, resolve, reject);
      this.sweeper.add(ex);
      let slots = this.slots.get(host);
      if (slots === undefined) {
        slots = { active: 0, waiting: new HostQueue() };
        this.slots.set(host, slots);
      }
      if (slots.active < this.cfg.connections_per_server) {
        slots.active++;
        void ex.start();
      } else slots.waiting.push(ex);
    });
  }

  /** An exchange ended: its slot goes to the next one waiting. */
  released(ex: UwsgiExchange, hadSlot: boolean): void {
    this.sweeper.delete(ex);
    const slots = this.slots.get(ex.host);
    if (slots !== undefined) {
      if (hadSlot) {
        const next = slots.waiting.shift();
        if (next !== undefined) void next.start();
        else slots.active--;
      } else slots.waiting.remove(ex);
    }
    if (this.closing !== null && this.sweeper.size === 0) this.closing();
  }

  closeHost(host: Host): void {
    this.slots.delete(host);
  }

  close(force = false): Promise<void> {
    if (force) for (const ex of this.sweeper.snapshot()) ex.abort(new ClientAbortedError() as UpstreamError);
    if (this.sweeper.size === 0) {
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

function noop(): void {}

class UwsgiExchange extends TransportExchange implements HttpResponseHandler {
  private socket: net.Socket | null = null;
  private readonly parser: HttpResponseParser;
  private body: Readable | null = null;
  /** The response whose head was parsed in the push in progress; handed over once that push ended cleanly. */
  private head: TransportResponse | null = null;
  private hadSlot = false;
  private paused = false;
  private readonly transport: UwsgiTransport;

  constructor(transport: UwsgiTransport, host: Host, req: TransportRequest, resolve: (res: TransportResponse) => void, reject: (err: Error) => void) {
    super(host, req, resolve, reject);
    this.transport = transport;
    this.parser = new HttpResponseParser(this, { isHead: req.method === 'HEAD' });
  }

  async start(): Promise<void> {
    this.hadSlot = true;
    if (this.phase === PHASE_DONE) {
      this.transport.released(this, true);
      return;
    }
    this.phase = PHASE_CONNECTING;
    this.touch();
    const req = this.req;
    let contentLength: number | undefined;
    let whole = req.bodyBuffer;
    if (whole === null && req.body !== null && req.contentLength < 0) {
      // unknown length: uwsgi needs CONTENT_LENGTH up front
      req.bodyStarted = true;
      try {
        whole = await readWholeBody(req.body, this.transport.cfg.max_body);
      } catch (err) {
        this.abort((err as UpstreamError).code?.startsWith('GW_') ? (err as UpstreamError) : (new ClientAbortedError() as UpstreamError));
        return;
      }
      if (this.phase === PHASE_DONE) return;
      contentLength = whole.length;
      this.touch();
    }
    const packet = encodeUwsgiRequest(requestVars(req, contentLength));
    if (packet instanceof ProtocolError) {
      this.abort(new HeadersTooLargeError(packet.message) as UpstreamError);
      return;
    }
    const target = this.host.target;
    const socket = target.kind === 'unix' ? net.connect(target.path) : net.connect(target.port, target.host);
    this.socket = socket;
    socket.setNoDelay(true);
    socket.once('connect', () => {
      if (this.phase === PHASE_DONE) return;
      this.phase = PHASE_HEAD;
      this.touch();
      if (whole !== null) {
        socket.cork();
        socket.write(packet);
        socket.write(whole);
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
    body.once('error', (err) => this.abort((err as UpstreamError).code?.startsWith('GW_') ? (err as UpstreamError) : protocolFailure(err, false)));
  }

  private onData(chunk: Buffer): void {
    const err = this.parser.push(chunk);
    // A response is handed over only after the packet that carried its head was parsed to the
    // end: a body already malformed in that packet (a bad chunk size right after the head) is a
    // clean 502 instead of a response that breaks once it was handed out.
    const head = this.head;
    if (head !== null) {
      this.head = null;
      if (err === null) {
        this.respond(head);
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
    const phase = this.phase;
    if (phase === PHASE_DONE) return;
    // refused or never connected: the app never saw it
    if (phase === PHASE_CONNECTING) this.abort(connectError(err ?? new Error('closed'), true));
    // the request went out: a reset now may come after the app acted
    else if (phase === PHASE_HEAD) this.abort(connectError(err ?? new Error('connection closed before a response'), false));
    // closed mid-body without the parser seeing the end: truncated
    else this.abort(protocolFailure(err ?? new Error('connection closed mid-body')));
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
        this.end(true);
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
    this.end(false);
    body?.push(null);
  }

  override checkTimeout(now: number): void {
    if (this.phase === PHASE_CONNECTING && this.socket?.connecting && now - this.lastActivity > this.transport.cfg.timeouts.connect_ms) {
      this.abort(connectError(new Error('connect timeout'), true));
      return;
    }
    super.checkTimeout(now);
  }

  protected override upstreamProgress(): number {
    return this.socket?.bytesRead ?? 0;
  }

  protected override waitingForClient(): boolean {
    return this.paused;
  }

  protected override sendBlocked(): boolean {
    return this.socket?.writableNeedDrain === true;
  }

  protected override responseBody(): Readable | null {
    return this.body;
  }

  protected override release(broken: boolean): void {
    const socket = this.socket;
    this.socket = null;
    if (socket !== null) {
      // one request per connection: uWSGI closes after the response anyway
      if (broken) socket.destroy();
      else socket.end();
      socket.on('error', noop);
    }
    this.transport.released(this, this.hadSlot);
  }
}
