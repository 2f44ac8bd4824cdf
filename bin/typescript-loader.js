// Imported before gatewire's TypeScript sources run (by bin/gatewire.js, and
// by `npm test`/`npm run bench` through --import). Node 22.18+ and 24 strip
// types themselves (process.features.typescript), so nothing is loaded and a
// process carries no loader (tsx costs ~32 MB of RSS per process). Node
// refuses to strip files under node_modules, and Node 20 cannot at all: only
// then tsx is registered, with its CommonJS hook too, so an app file outside a
// "type": "module" package still loads.
const here = new URL('.', import.meta.url).pathname;
if (!process.features.typescript || here.includes('/node_modules/')) {
  (await import('tsx/cjs/api')).register();
  (await import('tsx/esm/api')).register();
}
