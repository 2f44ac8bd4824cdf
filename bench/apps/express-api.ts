// An ordinary Express JSON API, written as a new user would, for the Express
// scenario: `gatewire serve bench/apps/express-api.ts` runs it as a Node
// (req, res) app; bench/apps/express-node-http.ts runs the same module on
// node:http behind the reply-from peer.
//
//   GET  /api/items       a list of 20 items (JSON, ~2 KiB)
//   GET  /api/items/:id   one item
//   POST /api/items       a small JSON body through express.json(), echoed with an id
import express from 'express';

interface Item {
  id: number;
  name: string;
  price: number;
  tags: string[];
  inStock: boolean;
}

const items: Item[] = Array.from({ length: 20 }, (_, i) => ({
  id: i + 1,
  name: `Item number ${i + 1}`,
  price: Math.round((i + 1) * 3.7 * 100) / 100,
  tags: ['bench', i % 2 === 0 ? 'even' : 'odd'],
  inStock: i % 3 !== 0,
}));

const app = express();
app.use(express.json());

app.get('/api/items', (_req, res) => {
  res.json(items);
});

app.get('/api/items/:id', (req, res) => {
  const item = items[Number(req.params.id) - 1];
  if (item === undefined) {
    res.status(404).json({ error: 'not found' });
    return;
  }
  res.json(item);
});

let nextId = 1000;
app.post('/api/items', (req, res) => {
  const body = req.body as Partial<Item> | undefined;
  if (!body || typeof body.name !== 'string') {
    res.status(400).json({ error: 'name is required' });
    return;
  }
  res.status(201).json({ ...body, id: nextId++ });
});

app.get('/healthz', (_req, res) => {
  res.type('text/plain').send('ok');
});

export default app;
