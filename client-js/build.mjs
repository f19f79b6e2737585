#!/usr/bin/env node
// Builds the client as the server serves it: one minified ES module, bundled from
// client-js/src by esbuild, with its gzip and brotli forms precompressed beside it; the
// entries on top of it, which import it from ./client.js: sharing (src/share.js) and presence
// (src/presence.js); and the entries that import nothing, each a module of its own: the
// close-code table (src/codes.js) and the transport memory (src/memory.js).
//
//   npm run build:client        (writes client-js/dist/{client,share,presence,codes,memory}.js{,.gz,.br}; commit them)
//
// client-js/test/build.test.js fails when the committed files differ from a fresh build, so
// a change to src/ that is committed without running this is caught.
import { writeFileSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { gzipSync, brotliCompressSync, constants } from 'node:zlib';
import { build } from 'esbuild';

export const DIST = fileURLToPath(new URL('./dist/', import.meta.url));

export const SRC = fileURLToPath(new URL('./src/', import.meta.url));

// The modules of the base client that share.js and presence.js import: in their builds they
// come from ./client.js (the base bundle beside it), so a page that loads both has one Ferry,
// one FerryError. Only names that client.js exports may be imported from them.
const BASE = new Set(['index.js', 'ferry.js', 'errors.js', 'reconnect.js', 'subscription.js'].map((f) => SRC + f));

/** @param {Uint8Array} contents */
function forms(contents) {
  const js = Buffer.from(contents);
  return {
    js,
    gz: gzipSync(js, { level: 9 }),
    br: brotliCompressSync(js, { params: { [constants.BROTLI_PARAM_QUALITY]: 11, [constants.BROTLI_PARAM_SIZE_HINT]: js.length } }),
  };
}

/** How every bundle is built. */
const OPTIONS = {
  bundle: true,
  minify: true,
  format: /** @type {const} */ ('esm'),
  legalComments: /** @type {const} */ ('none'),
  // Members internal to the package end in `_` (emit_, apply_, ferry_…: what one module
  // calls on another's object, where a #private name can't reach). Their names are
  // shortened like #private ones; nothing outside the bundle may use them, except
  // the entries on top of it (share.js, presence.js), built with the same names (mangleCache).
  mangleProps: /_$/,
  write: false,
};

/**
 * Builds the base client (src/index.js), with its own mangle cache for the entries on top
 * of it. size.mjs builds it through here too, with plugins that stub modules out.
 * @param {import('esbuild').Plugin[]} [plugins]
 */
export function buildBase(plugins = []) {
  return build({ ...OPTIONS, entryPoints: [SRC + 'index.js'], mangleCache: {}, plugins });
}

/**
 * The bundles and their compressed forms, as Buffers: `client` (the base client, src/index.js),
 * `share` and `presence` (src/share.js, src/presence.js, which import the base from
 * ./client.js), and those that import
 * nothing: `codes` (src/codes.js, the close-code table with its names) and `memory`
 * (src/memory.js, the transport memory).
 */
export async function bundles() {
  const client = await buildBase();
  // An entry on top of the base: the base's modules come from ./client.js.
  const onBase = async (/** @type {string} */ file) => forms((await build({
    ...OPTIONS,
    entryPoints: [SRC + file],
    mangleCache: client.mangleCache,
    plugins: [{
      name: 'base-from-client.js',
      setup(b) {
        b.onResolve({ filter: /^\./ }, (args) => {
          const path = fileURLToPath(new URL(args.path, `file://${args.resolveDir}/`));
          return BASE.has(path) ? { path: './client.js', external: true } : undefined;
        });
      },
    }],
  })).outputFiles[0].contents);
  const alone = async (/** @type {string} */ file) => forms((await build({ ...OPTIONS, entryPoints: [SRC + file] })).outputFiles[0].contents);
  return {
    client: forms(client.outputFiles[0].contents),
    share: await onBase('share.js'),
    presence: await onBase('presence.js'),
    codes: await alone('codes.js'),
    memory: await alone('memory.js'),
  };
}

/** The base client's bundle and its compressed forms (what /ferry/client.js serves). */
export async function bundle() {
  return (await bundles()).client;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const all = await bundles();
  mkdirSync(DIST, { recursive: true });
  for (const [name, { js, gz, br }] of Object.entries(all)) {
    writeFileSync(`${DIST}${name}.js`, js);
    writeFileSync(`${DIST}${name}.js.gz`, gz);
    writeFileSync(`${DIST}${name}.js.br`, br);
    console.log(`client-js/dist/${name}.js: ${js.length} bytes, gzip ${gz.length}, brotli ${br.length}`);
  }
}
