import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gzipSync } from 'node:zlib';
import { bundles } from '../build.mjs';
import { sizeWithout } from '../size.mjs';

// The measure of issue 18: esbuild --bundle --minify --format=esm, then gzip -9. Peers by the
// same measure: phoenix 7.8 KB, engine.io-client 8.3 KB, socket.io-client 13.5 KB.
// The goal for the base client is under 5,000 bytes; it is not reached (README, "Size"):
// the base is at 6,592 as built (build.mjs also shortens the `_`-suffixed internal names;
// 6,962 by the plain command of issue 18). The opt-in entries come on top for the apps that
// load them: share 2,513, presence 398, codes 328, memory 319. Each budget holds what is
// reached, less than 100 bytes above it.
const BUDGET = { client: 6650, share: 2560, presence: 450, codes: 400, memory: 400 };

for (const [name, budget] of Object.entries(BUDGET)) {
  test(`the ${name} bundle stays under ${budget} bytes gzipped`, async () => {
    const { js, br } = (await bundles())[name];
    const gz = gzipSync(js, { level: 9 }).length;
    console.log(`${name} bundle: ${js.length} bytes minified, ${gz} gzipped, ${br.length} brotli`);
    assert.ok(gz < budget, `${gz} bytes gzipped, budget ${budget}`);
  });
}

test('size.mjs measures the base as built, and less with a module stubbed', async () => {
  const { js } = (await bundles()).client;
  const base = await sizeWithout([]);
  assert.equal(base.minified, js.length);
  assert.equal(base.gzipped, gzipSync(js, { level: 9 }).length);
  const without = await sizeWithout(['detector.js']);
  assert.ok(without.gzipped < base.gzipped, `without detector.js ${without.gzipped}, base ${base.gzipped}`);
  await assert.rejects(sizeWithout(['no-such.js']), /not a module of the base client/);
});
