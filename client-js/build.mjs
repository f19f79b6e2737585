#!/usr/bin/env node
// Builds the client as the server serves it: one minified ES module, bundled from
// client-js/src by esbuild, with its gzip and brotli forms precompressed beside it.
//
//   npm run build:client        (writes client-js/dist/client.js{,.gz,.br}; commit them)
//
// client-js/test/build.test.js fails when the committed files differ from a fresh build, so
// a change to src/ that is committed without running this is caught.
import { writeFileSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { gzipSync, brotliCompressSync, constants } from 'node:zlib';
import { build } from 'esbuild';

export const DIST = fileURLToPath(new URL('./dist/', import.meta.url));

/** The bundle and its compressed forms, as Buffers. */
export async function bundle() {
  const out = await build({
    entryPoints: [fileURLToPath(new URL('./src/index.js', import.meta.url))],
    bundle: true,
    minify: true,
    format: 'esm',
    legalComments: 'none',
    // Members internal to the package end in `_` (emit_, apply_, presence_…: what one module
    // calls on another's object, where a #private name can't reach). Their names are
    // shortened like #private ones; nothing outside the bundle may use them.
    mangleProps: /_$/,
    write: false,
  });
  const js = Buffer.from(out.outputFiles[0].contents);
  return {
    js,
    gz: gzipSync(js, { level: 9 }),
    br: brotliCompressSync(js, { params: { [constants.BROTLI_PARAM_QUALITY]: 11, [constants.BROTLI_PARAM_SIZE_HINT]: js.length } }),
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { js, gz, br } = await bundle();
  mkdirSync(DIST, { recursive: true });
  writeFileSync(DIST + 'client.js', js);
  writeFileSync(DIST + 'client.js.gz', gz);
  writeFileSync(DIST + 'client.js.br', br);
  console.log(`client-js/dist/client.js: ${js.length} bytes, gzip ${gz.length}, brotli ${br.length}`);
}
