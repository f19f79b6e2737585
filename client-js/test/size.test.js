import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

// engine.io-client is 8.3 KB gzipped, socket.io-client 13.5 KB, centrifuge 23.7 KB.
const BUDGET = 8 * 1024;

test('the bundle stays small', async () => {
  const out = await build({
    entryPoints: [fileURLToPath(new URL('../src/index.js', import.meta.url))],
    bundle: true,
    minify: true,
    format: 'esm',
    write: false,
  });
  const code = out.outputFiles[0].contents;
  const gz = gzipSync(code, { level: 9 }).length;
  console.log(`client bundle: ${code.length} bytes minified, ${gz} bytes gzipped`);
  assert.ok(gz < BUDGET, `${gz} bytes gzipped, budget ${BUDGET}`);
});
