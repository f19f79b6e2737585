// What the base client would weigh without some of its modules: each module named is
// replaced by a stub that exports the same names and does nothing, and the base bundle is
// built as build.mjs builds it, then gzipped (-9). The call sites stay, so a figure is a
// little above what removing that behaviour would reach. Used for the figures of
// client-js/README, "Size".
//
//   node client-js/size.mjs                                    (the base as built)
//   node client-js/size.mjs detector.js transports/longpoll.js (paths under src/)
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { buildBase, SRC } from './build.mjs';

/** A module with the exports of `file`, each a function that does nothing. @param {string} file */
function stub(file) {
  const names = [...readFileSync(file, 'utf8').matchAll(/^export (?:async )?(?:function|class|const|let) (\w+)/gm)].map((m) => m[1]);
  if (!names.length) throw new Error(`${file}: no exports found to stub`);
  return names.map((n) => `export function ${n}() {}`).join('\n');
}

/**
 * The base bundle with the given modules (paths under src/) stubbed: its minified and
 * gzipped sizes in bytes.
 * @param {string[]} files
 */
export async function sizeWithout(files) {
  const stubbed = new Set(files.map((f) => SRC + f));
  const seen = new Set();
  const result = await buildBase([{
    name: 'stub',
    setup(b) {
      b.onLoad({ filter: /\.js$/ }, (args) => {
        if (!stubbed.has(args.path)) return undefined;
        seen.add(args.path);
        return { contents: stub(args.path), loader: 'js' };
      });
    },
  }]);
  for (const f of stubbed) if (!seen.has(f)) throw new Error(`${f}: not a module of the base client`);
  const js = result.outputFiles[0].contents;
  return { minified: js.length, gzipped: gzipSync(js, { level: 9 }).length };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const files = process.argv.slice(2);
  const { minified, gzipped } = await sizeWithout(files);
  console.log(`base client${files.length ? ` without ${files.join(', ')}` : ''}: ${minified} bytes minified, ${gzipped} gzipped`);
}
