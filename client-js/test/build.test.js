import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { gunzipSync, brotliDecompressSync } from 'node:zlib';
import { bundle, DIST } from '../build.mjs';

// The server embeds client-js/dist (client-js/embed.go); it must be what src/ builds to.
test('the committed dist/client.js is a fresh build of src/ (run `npm run build:client`)', async () => {
  const { js } = await bundle();
  const committed = readFileSync(DIST + 'client.js');
  assert.ok(committed.equals(js), `dist/client.js (${committed.length} bytes) differs from a fresh build (${js.length} bytes): run npm run build:client and commit`);
  assert.ok(gunzipSync(readFileSync(DIST + 'client.js.gz')).equals(js), 'dist/client.js.gz is not dist/client.js');
  assert.ok(brotliDecompressSync(readFileSync(DIST + 'client.js.br')).equals(js), 'dist/client.js.br is not dist/client.js');
});

test('the bundle exports the public API and nothing reaches for Node', async () => {
  const mod = await import(DIST + 'client.js');
  assert.deepEqual(Object.keys(mod).sort(), ['CloseCodes', 'Ferry', 'FerryError', 'Subscription', 'isTerminal', 'shouldReconnect']);
  assert.doesNotMatch(readFileSync(DIST + 'client.js', 'utf8'), /require\(|node:/);
});
