// The gatewire codec in one import: wire constants, errors, the vars block,
// native frames, the native session, uwsgi classic packets and the raw-HTTP
// response parser used for uwsgi upstreams. PROTOCOL.md is the spec.
export * from './constants.ts';
export * from './errors.ts';
export * from './frame.ts';
export * from './http-response.ts';
export { detectProtocol, GatewireSession, GatewireStream, type SessionOptions, StreamResetError } from './session.ts';
export * from './uwsgi.ts';
export * from './vars.ts';
