// Coded errors of the proxy (Fastify's @fastify/error). A transport fails an
// exchange with one of these; the exchange maps `statusCode` to the short answer
// NGINX users expect (reply-from's defaults would answer 500 to a refused
// connection). `retryable` says the upstream never processed the request, so
// another host may get it whatever its method.
import createError from '@fastify/error';

export interface UpstreamError extends Error {
  code: string;
  statusCode: number;
  retryable?: boolean;
  /** The host failed (connect error, timeout, protocol error): counts for passive health. */
  hostFailure?: boolean;
}

/** Refused or reset before a response arrived. */
export const UpstreamConnectError = createError('GW_UPSTREAM_CONNECT', 'upstream connection failed: %s', 502);
/** No response head within the read timeout, or no body bytes for that long. */
export const UpstreamTimeoutError = createError('GW_UPSTREAM_TIMEOUT', 'upstream timed out: %s', 504);
/** The upstream spoke something we cannot parse, or reset the stream. */
export const UpstreamProtocolError = createError('GW_UPSTREAM_PROTOCOL', 'upstream protocol error: %s', 502);
/** A gatewire stream the server refused or never processed (REFUSED_STREAM, GOAWAY): always safe to retry. */
export const UpstreamRefusedStreamError = createError('GW_UPSTREAM_REFUSED_STREAM', 'upstream refused the stream: %s', 502);
/** Request headers do not fit the vars block of the uwsgi/gatewire protocols. */
export const HeadersTooLargeError = createError('GW_HEADERS_TOO_LARGE', 'request headers too large: %s', 431);
/** Every host of the upstream is down, draining or already tried. */
export const NoHealthyUpstreamError = createError('GW_NO_HEALTHY_UPSTREAM', 'no available server in upstream %s', 503);
/** The request body is larger than the upstream's max_body. */
export const BodyTooLargeError = createError('GW_BODY_TOO_LARGE', 'request body larger than %s bytes', 413);
/** The client sent no request body bytes for limits.body_timeout (NGINX's client_body_timeout). */
export const BodyTimeoutError = createError('GW_BODY_TIMEOUT', 'no request body bytes for %s ms', 408);
/**
 * The proxy could not forward the request (a head the upstream client refuses, a bug of ours):
 * a 502 that never counts against the server, which did nothing wrong.
 */
export const ProxyForwardError = createError('GW_PROXY_FORWARD', 'could not forward the request: %s', 502);
/** The client went away before the exchange ended. */
export const ClientAbortedError = createError('GW_CLIENT_ABORTED', 'client closed the request', 499);

export function connectError(cause: unknown, retryable: boolean): UpstreamError {
  const err = new UpstreamConnectError(describe(cause), { cause }) as UpstreamError;
  err.retryable = retryable;
  err.hostFailure = true;
  return err;
}

export function timeoutError(what: string): UpstreamError {
  const err = new UpstreamTimeoutError(what) as UpstreamError;
  err.hostFailure = true;
  return err;
}

export function protocolFailure(cause: unknown, hostFailure = true): UpstreamError {
  const err = new UpstreamProtocolError(describe(cause), { cause }) as UpstreamError;
  err.hostFailure = hostFailure;
  return err;
}

export function proxyFailure(cause: unknown): UpstreamError {
  const err = new ProxyForwardError(describe(cause), { cause }) as UpstreamError;
  err.hostFailure = false;
  return err;
}

export function refusedStream(cause: unknown): UpstreamError {
  const err = new UpstreamRefusedStreamError(describe(cause), { cause }) as UpstreamError;
  err.retryable = true;
  return err;
}

function describe(cause: unknown): string {
  if (cause instanceof Error) return (cause as NodeJS.ErrnoException).code ?? cause.message;
  return String(cause);
}

/** Short bodies for the mapped statuses: never an internal message. */
export const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  404: 'Not Found',
  408: 'Request Timeout',
  411: 'Length Required',
  413: 'Content Too Large',
  431: 'Request Header Fields Too Large',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};
