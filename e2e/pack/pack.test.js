// Issue 18: the published package works as users install it. `npm pack` of client-js, the
// tarball unpacked into a scratch project's node_modules (as `npm install` would, with no
// network), then used as `import { Ferry } from '@ferryrt/client'`:
//   - in Node 20, with `ws` and `eventsource` passed (from the repository's node_modules),
//     against the real server: connect, subscribe, publish, receive;
//   - bundled for the browser by esbuild, the bundle then run the same way.
//   node --test e2e/pack/
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { FerryNode, REPO } from '../lib/ferry.js';
import { runCommand, scenarioDir } from '../lib/util.js';

let node;
let dir;

before(async () => {
  dir = scenarioDir('pack');
  node = new FerryNode({ dir, name: 'ferry' });
  await node.start();
  const project = path.join(dir, 'app');
  fs.mkdirSync(path.join(project, 'node_modules', '@ferryrt', 'client'), { recursive: true });
  const r = await runCommand('npm', ['pack', '--silent', '--pack-destination', dir], { cwd: path.join(REPO, 'client-js'), timeout: 60000 });
  assert.equal(r.code, 0, r.stderr);
  const tgz = path.join(dir, r.stdout.trim().split('\n').pop());
  const x = await runCommand('tar', ['-xzf', tgz, '--strip-components=1', '-C', path.join(project, 'node_modules', '@ferryrt', 'client')]);
  assert.equal(x.code, 0, x.stderr);
  for (const dep of ['ws', 'eventsource']) {
    fs.symlinkSync(path.join(REPO, 'node_modules', dep), path.join(project, 'node_modules', dep));
  }
  fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
  fs.writeFileSync(path.join(project, 'use.js'), USE);
  fs.writeFileSync(path.join(project, 'browser.js'), "export { Ferry } from '@ferryrt/client';\n");
});

after(async () => { await node?.stop(); });

// Connects on the given transport, publishes one message and waits for it to come back.
const USE = `
import WebSocket from 'ws';
import { EventSource } from 'eventsource';
export async function roundTrip(Ferry, url, transport) {
  const ferry = new Ferry(url, { WebSocket, EventSource, transports: [transport], storage: null });
  try {
    let published;
    const got = new Promise((resolve) => ferry.subscribe('room:pack', (data) => resolve(data)).on('subscribed', () => {
      published ??= ferry.publish('room:pack', { hi: transport });
    }));
    let timer;
    const data = await Promise.race([got, new Promise((_, j) => { timer = setTimeout(() => j(new Error('no message in 10 s on ' + transport)), 10000); })]);
    clearTimeout(timer);
    return { data, transport: ferry.transport, pos: await published };
  } finally {
    ferry.close();
  }
}
`;

test('the packed package imports as @ferryrt/client in Node and carries a message on each transport', { timeout: 60000 }, async () => {
  const app = path.join(dir, 'app');
  const pkg = JSON.parse(fs.readFileSync(path.join(app, 'node_modules/@ferryrt/client/package.json'), 'utf8'));
  assert.equal(pkg.name, '@ferryrt/client');
  // Resolved the way Node resolves it for the app: through the package's exports.
  const script = `import { Ferry } from '@ferryrt/client'; import { roundTrip } from './use.js';
    for (const t of ['websocket', 'sse', 'longpoll']) console.log(JSON.stringify(await roundTrip(Ferry, ${JSON.stringify(node.url + '/ferry')}, t)));`;
  fs.writeFileSync(path.join(app, 'main.js'), script);
  const r = await runCommand(process.execPath, ['--unhandled-rejections=strict', 'main.js'], { cwd: app, timeout: 45000 });
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(lines.map((l) => [l.transport, l.data.hi]), [['websocket', 'websocket'], ['sse', 'sse'], ['longpoll', 'longpoll']]);
  for (const l of lines) assert.equal(typeof l.pos?.offset, 'number');
});

test('esbuild bundles the package for the browser, and the bundle works', { timeout: 60000 }, async () => {
  const app = path.join(dir, 'app');
  const { build } = await import(pathToFileURL(path.join(REPO, 'node_modules/esbuild/lib/main.js')).href);
  const out = path.join(app, 'bundle.js');
  await build({ entryPoints: [path.join(app, 'browser.js')], bundle: true, minify: true, format: 'esm', platform: 'browser', absWorkingDir: app, outfile: out, logLevel: 'silent' });
  const code = fs.readFileSync(out, 'utf8');
  assert.doesNotMatch(code, /require\(|from"node:|from"ws"/);
  const { Ferry } = await import(pathToFileURL(out).href);
  const { roundTrip } = await import(pathToFileURL(path.join(app, 'use.js')).href);
  const r = await roundTrip(Ferry, node.url + '/ferry', 'websocket');
  assert.deepEqual([r.transport, r.data.hi], ['websocket', 'websocket']);
});
