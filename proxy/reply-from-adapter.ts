// @fastify/reply-from, our forwarding layer, confined to this file. What it does
// for us: the response hand-off (status and headers copied onto the Fastify
// reply through our rewriteHeaders hook, a client that left before the head
// arrived, the body sent as a stream or a buffer through reply.send), and the
// request header hook where the upstream head is built (forwarding.ts).
//
// What we give it: our UpstreamDispatcher as its `undici` (it calls
// `request(opts, cb)` as on an undici Pool). reply-from calls
// rewriteRequestHeaders and then the dispatcher synchronously within
// reply.from(), so the exchange being forwarded is handed over through one
// slot (`forwarding`) rather than smuggled in the headers. The target it
// rebuilds through the WHATWG URL parser (dot segments resolved, `\` turned
// into `/`) is ignored: the exchange's path is the raw target, byte for byte.
// Its body handling is bypassed too (`body: null`): the exchange owns the body.
// test/proxy-reply-from-contract.test.ts fails loudly if an upgrade changes
// any of this.
import http from 'node:http';
import replyFrom from '@fastify/reply-from';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ExchangeCallback, ExchangeResponse, ProxyExchange } from './exchange.ts';
import { STATUS_TEXT, type UpstreamError } from './errors.ts';
import { type ForwardingContext, forwardedHeaders, rewriteResponseHeaders } from './forwarding.ts';
import { type Compression, replyHead } from './compression.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** The matched route's compression, applied to the upstream's response (set by the server). */
    gwCompress: Compression | null;
  }
}

/** The statuses an upstream error keeps; anything else is a 502. */
const MAPPED = new Set([408, 413, 431, 502, 503, 504]);

/** Sends one of the proxy's own short answers ("502 Bad Gateway\n"). */
export function sendShort(reply: FastifyReply, status: number): FastifyReply {
  return reply
    .code(status)
    .header('content-type', 'text/plain; charset=utf-8')
    .send(`${status} ${STATUS_TEXT[status] ?? http.STATUS_CODES[status] ?? ''}\n`);
}

/** The answer to a failed exchange (before any byte of a response went out). */
export function sendUpstreamError(reply: FastifyReply, err: UpstreamError): void {
  if (err.code === 'GW_CLIENT_ABORTED' || reply.raw.destroyed) {
    reply.raw.destroy();
    return;
  }
  const status = MAPPED.has(err.statusCode) ? err.statusCode : 502;
  // the rest of the request body is not read: the connection cannot carry another request
  if (status === 413 || status === 408) reply.header('connection', 'close');
  reply.header('x-request-id', reply.request.id);
  sendShort(reply, status);
}

/** What reply-from sees as its undici instance: one exchange per request() call. */
class UpstreamDispatcher {
  /** The exchange reply.from() is forwarding right now (set and taken within the same call). */
  forwarding: ProxyExchange | null = null;

  request(_opts: unknown, cb: ExchangeCallback): void {
    const ex = this.forwarding;
    this.forwarding = null;
    if (ex === null) {
      process.nextTick(cb, new Error('gatewire: reply-from called its dispatcher outside reply.from()'));
      return;
    }
    ex.start(cb);
  }
  close(): void {}
  destroy(): void {}
}

export interface ForwardingOptions {
  /** Whether a peer's X-Forwarded-* are trusted (trust_proxy). */
  trusted(ip: string): boolean;
}

/** Registers reply-from on `app`; returns the function that forwards an exchange through it. */
export function registerForwarding(app: FastifyInstance, opts: () => ForwardingOptions): (reply: FastifyReply, ex: ProxyExchange) => void {
  const dispatcher = new UpstreamDispatcher();
  app.decorateRequest('gwCompress', null);
  app.register(replyFrom, {
    undici: dispatcher as never,
    base: 'http://upstream.gatewire',
    disableRequestLogging: true,
    // the exchange retries (on another host); reply-from's own retry would re-send to the same one
    retryMethods: [],
    cacheURLs: 1000,
  });

  const fwd: ForwardingContext = { clientIp: '', scheme: 'http', requestId: '', trusted: false, prefix: '', dropContentLength: false };
  const replyOpts = {
    // reply-from forwards no body of its own: the exchange sends the client's (streamed or whole)
    body: null,
    rewriteRequestHeaders(request: FastifyRequest, _headers: Record<string, unknown>): Record<string, unknown> {
      const ex = dispatcher.forwarding as ProxyExchange;
      fwd.clientIp = ex.clientIp;
      fwd.scheme = ex.scheme;
      fwd.requestId = request.id;
      fwd.trusted = opts().trusted(ex.clientIp);
      fwd.prefix = ex.scriptName;
      fwd.dropContentLength = !ex.forwardsBody;
      ex.upstreamHeaders = forwardedHeaders(request.raw, fwd);
      // what reply-from passes on to the dispatcher goes nowhere (the upstream head is the
      // exchange's upstreamHeaders): no headers spare it a copy of every header per request
      return NO_HEADERS;
    },
    rewriteHeaders(headers: Record<string, unknown>, request: FastifyRequest): Record<string, unknown> {
      return rewriteResponseHeaders(headers, request.id);
    },
    onResponse(request: FastifyRequest, reply: FastifyReply, res: ExchangeResponse & { stream: ExchangeResponse['body'] }): void {
      const compression = request.gwCompress;
      if (compression != null) {
        const raw = request.raw;
        reply.send(compression.apply(raw.method as string, raw.headers['accept-encoding'], reply.statusCode, replyHead(reply), res.stream));
      } else reply.send(res.stream);
      // Fastify writes the head with the first body chunk; an event stream may stay silent for
      // a long time, so its head goes out now.
      const ct = res.headers['content-type'];
      if (typeof ct === 'string' && ct.startsWith('text/event-stream') && !reply.raw.headersSent) reply.raw.flushHeaders();
    },
    onError(reply: FastifyReply, { error }: { error: Error & { cause?: unknown } }): void {
      // reply-from wraps what the dispatcher failed with; ours are always the cause
      sendUpstreamError(reply, (error.cause ?? error) as UpstreamError);
    },
    // the query travels in the exchange's path, untouched
    queryString: noQueryString,
  };

  return (reply, ex) => {
    dispatcher.forwarding = ex;
    try {
      reply.from('/', replyOpts as never);
    } finally {
      dispatcher.forwarding = null;
    }
  };
}

const NO_HEADERS: Record<string, unknown> = Object.freeze({});

function noQueryString(): string {
  return '';
}
