import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gzipSync } from 'node:zlib';
import { bundles } from '../build.mjs';

// The measure of issue 18: esbuild --bundle --minify --format=esm, then gzip -9. Peers by the
// same measure: phoenix 7.8 KB, engine.io-client 8.3 KB, socket.io-client 13.5 KB.
// The goal for the base client is under 5,000 bytes; it is not reached (README, "Size"):
// the base is at 7,204 as built (build.mjs also shortens the `_`-suffixed internal names;
// 7,577 by the plain command of issue 18), the sharing entry at 2,513 on top. Each budget
// holds what is reached, less than 100 bytes above it.
const BUDGET = { client: 6700, share: 2560, presence: 450, codes: 400, memory: 400 };

for (const [name, budget] of Object.entries(BUDGET)) {
  test(`the ${name} bundle stays under ${budget} bytes gzipped`, async () => {
    const { js, br } = (await bundles())[name];
    const gz = gzipSync(js, { level: 9 }).length;
    console.log(`${name} bundle: ${js.length} bytes minified, ${gz} gzipped, ${br.length} brotli`);
    assert.ok(gz < budget, `${gz} bytes gzipped, budget ${budget}`);
  });
}
