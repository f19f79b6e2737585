import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { gunzipSync, brotliDecompressSync } from 'node:zlib';
import { bundles, DIST } from '../build.mjs';

// The server embeds client-js/dist (client-js/embed.go); it must be what src/ builds to.
test('the committed dist/ is a fresh build of src/ (run `npm run build:client`)', async () => {
  for (const [name, { js }] of Object.entries(await bundles())) {
    const committed = readFileSync(`${DIST}${name}.js`);
    assert.ok(committed.equals(js), `dist/${name}.js (${committed.length} bytes) differs from a fresh build (${js.length} bytes): run npm run build:client and commit`);
    assert.ok(gunzipSync(readFileSync(`${DIST}${name}.js.gz`)).equals(js), `dist/${name}.js.gz is not dist/${name}.js`);
    assert.ok(brotliDecompressSync(readFileSync(`${DIST}${name}.js.br`)).equals(js), `dist/${name}.js.br is not dist/${name}.js`);
  }
});

const API = ['Ferry', 'FerryError', 'Subscription', 'isTerminal', 'shouldReconnect'];

test('the bundle exports the public API and nothing reaches for Node', async () => {
  const mod = await import(DIST + 'client.js');
  assert.deepEqual(Object.keys(mod).sort(), API);
  assert.doesNotMatch(readFileSync(DIST + 'client.js', 'utf8'), /require\(|node:/);
});

test('the sharing bundle exports the same API, imports the base from ./client.js and holds no copy of it', async () => {
  const base = await import(DIST + 'client.js');
  const mod = await import(DIST + 'share.js');
  assert.deepEqual(Object.keys(mod).sort(), API);
  assert.ok(mod.Ferry.prototype instanceof base.Ferry, 'its Ferry extends the base one');
  assert.equal(mod.FerryError, base.FerryError, 'one error type for both');
  const src = readFileSync(DIST + 'share.js', 'utf8');
  assert.deepEqual([...new Set(src.match(/from\s*"[^"]*"/g))], ['from"./client.js"']);
  assert.doesNotMatch(src, /require\(|node:|going away/);
});

test('the codes bundle is the close-code table alone, and the base holds no copy of it', async () => {
  const { CloseCodes } = await import('../src/codes.js');
  const mod = await import(DIST + 'codes.js');
  assert.deepEqual(Object.keys(mod), ['CloseCodes']);
  assert.deepEqual(mod.CloseCodes, CloseCodes);
  assert.doesNotMatch(readFileSync(DIST + 'codes.js', 'utf8'), /import|require\(/);
  assert.doesNotMatch(readFileSync(DIST + 'client.js', 'utf8'), /going away/);
});

test('the memory bundle is rememberTransport alone', async () => {
  const mod = await import(DIST + 'memory.js');
  assert.deepEqual(Object.keys(mod), ['rememberTransport']);
  assert.doesNotMatch(readFileSync(DIST + 'memory.js', 'utf8'), /import|require\(|node:/);
  assert.doesNotMatch(readFileSync(DIST + 'client.js', 'utf8'), /ferry:transport:/);
});

test('the presence bundle imports the base from ./client.js and holds no copy of it', async () => {
  await import(DIST + 'client.js');
  const mod = await import(DIST + 'presence.js');
  assert.deepEqual(Object.keys(mod).sort(), ['presence', 'presenceFeed']);
  const src = readFileSync(DIST + 'presence.js', 'utf8');
  assert.deepEqual([...new Set(src.match(/from\s*"[^"]*"/g))], ['from"./client.js"']);
  assert.doesNotMatch(src, /require\(|node:|class /);
  assert.doesNotMatch(readFileSync(DIST + 'client.js', 'utf8'), /api\/presence/);
});
