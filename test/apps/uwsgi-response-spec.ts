// A Fetch app that answers what the request asks for, for the uwsgi response
// property test: status from ?s=, a body of ?n= bytes (byte i = i % 251),
// headers from the x-spec request header (JSON [name, value] pairs, values
// latin1), and the request body read in full when ?read=1.
export default {
  async fetch(req: Request): Promise<Response> {
    const url = new URL(req.url);
    const status = Number(url.searchParams.get('s') ?? 200);
    const n = Number(url.searchParams.get('n') ?? 0);
    if (url.searchParams.get('read') === '1') await req.arrayBuffer();
    const pairs = JSON.parse(req.headers.get('x-spec') ?? '[]') as Array<[string, string]>;
    const body = new Uint8Array(n);
    for (let i = 0; i < n; i++) body[i] = i % 251;
    return new Response(body, { status, headers: pairs });
  },
};
