// A small Express app, unchanged Express 5 from npm: `gatewire serve
// examples/express-app.ts` detects the (req, res) listener and runs it.
//
//   GET  /              "Hello from Express"
//   GET  /users/:id     JSON from a route parameter
//   POST /json          express.json() body parsing, echoed back
//   GET  /cookies       sets two cookies and returns the ones received
//   GET  /redirect      302 to /
//   GET  /stream?n=5    res.write() chunks with a pause between them
//   GET  /big?n=BYTES   res.write() with backpressure (waits for 'drain')
//   GET  /file          res.sendFile of examples/public/hello.txt
//   GET  /fail          an error passed to next() (Express's own 500)
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import express from 'express';

const here = path.dirname(fileURLToPath(import.meta.url));
const app = express();
app.use(express.json());

app.get('/', (_req, res) => {
  res.type('text/plain').send('Hello from Express\n');
});

app.get('/users/:id', (req, res) => {
  res.json({ id: req.params.id, query: req.query, protocol: req.protocol, ip: req.ip });
});

app.post('/json', (req, res) => {
  res.json({ received: req.body });
});

app.get('/cookies', (req, res) => {
  const received: Record<string, string> = {};
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0) received[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  res.cookie('session', 'abc123', { httpOnly: true });
  res.cookie('theme', 'dark');
  res.json({ received });
});

app.get('/redirect', (_req, res) => {
  res.redirect('/');
});

app.get('/stream', (req, res) => {
  const n = Number(req.query.n ?? 5);
  let i = 0;
  res.type('text/plain');
  const timer = setInterval(() => {
    res.write(`chunk ${i}\n`);
    if (++i >= n) {
      clearInterval(timer);
      res.end();
    }
  }, 50);
  res.on('close', () => clearInterval(timer));
});

app.get('/big', (req, res) => {
  let left = Number(req.query.n ?? 1024 * 1024);
  const chunk = Buffer.alloc(64 * 1024, 'y');
  res.type('application/octet-stream');
  const pump = () => {
    while (left > 0) {
      const piece = left >= chunk.length ? chunk : chunk.subarray(0, left);
      left -= piece.length;
      if (!res.write(piece)) {
        res.once('drain', pump);
        return;
      }
    }
    res.end();
  };
  pump();
});

app.get('/file', (_req, res) => {
  res.sendFile(path.join(here, 'public', 'hello.txt'));
});

app.get('/fail', (_req, _res, next) => {
  next(new Error('boom: an Express route error'));
});


// Express's default error page shows the stack outside production; this app answers short and logs.
app.use((err: Error, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
  console.error(err);
  res.status(500).type('text/plain').send('Internal Server Error\n');
});

export default app;
