// Issue 18: what a browser downloads of the client. The chat demo page is loaded in Chromium
// with a cold cache, then again with a warm one; the test reports the requests and the bytes
// of client code (the module at /ferry/client.js or /ferry/client.<hash>.js) each time.
// Cold: one request, compressed. Warm: revalidated or served from the cache, no client bytes.
//   node --test e2e/demo/
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { FerryNode } from '../lib/ferry.js';
import { launchBrowser } from '../lib/browser.js';
import { scenarioDir, waitFor } from '../lib/util.js';

const CLIENT = /\/ferry\/client(\.[0-9a-f]{16})?\.js$/;
let browser;
let node;

before(async () => {
  browser = await launchBrowser();
  node = new FerryNode({ dir: scenarioDir('demo-cache'), name: 'ferry', flags: { demo: true } });
  await node.start();
});

after(async () => {
  await node?.stop();
  await browser?.close();
});

/** Loads the chat page and waits for its client to connect; returns the client requests. */
async function load(page) {
  const seen = [];
  const onDone = async (req) => {
    if (!CLIENT.test(new URL(req.url()).pathname)) return;
    const resp = await req.response();
    const sizes = await req.sizes();
    // responseBodySize: the bytes that came over the network (0 for a 304 or a cache hit).
    seen.push({ url: req.url(), status: resp?.status(), bodyBytes: sizes.responseBodySize, encoding: resp ? await resp.headerValue('content-encoding') : null });
  };
  const pending = [];
  const listener = (req) => pending.push(onDone(req));
  page.on('requestfinished', listener);
  await page.goto(`${node.url}/chat.html`, { waitUntil: 'load' });
  // The page's own import of the client has settled (a second import reuses the module map).
  await waitFor(() => page.evaluate(async () => {
    const m = await import('/ferry/client.js');
    return typeof m.Ferry === 'function';
  }), { timeout: 10000, what: 'the client module' });
  page.off('requestfinished', listener);
  await Promise.all(pending);
  return seen;
}

test('the client module: one compressed download cold, no client bytes warm', { timeout: 120000 }, async () => {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    const cold = await load(page);
    const warm = await load(page);
    const sum = (xs) => xs.reduce((n, x) => n + Math.max(0, x.bodyBytes), 0);
    console.log(`# cold: ${cold.length} client request(s), ${sum(cold)} bytes (${cold.map((x) => `${x.status} ${x.encoding ?? 'identity'}`).join(', ')})`);
    console.log(`# warm: ${warm.length} client request(s), ${sum(warm)} bytes (${warm.map((x) => `${x.status}`).join(', ')})`);
    assert.equal(cold.length, 1, JSON.stringify(cold));
    assert.equal(cold[0].status, 200);
    assert.ok(['br', 'gzip'].includes(cold[0].encoding), `cold download not compressed: ${cold[0].encoding}`);
    assert.ok(cold[0].bodyBytes > 1000 && cold[0].bodyBytes < 10000, `cold: ${cold[0].bodyBytes} bytes`);
    assert.ok(warm.length <= 1, JSON.stringify(warm));
    assert.equal(sum(warm), 0, `warm load downloaded client bytes: ${JSON.stringify(warm)}`);
    for (const x of warm) assert.ok(x.status === 304 || x.status === 200, JSON.stringify(x));
  } finally {
    await context.close();
  }
});
