// Real Chromium (Debian's /usr/bin/chromium) driven by playwright-core. The page opens a real
// URL of the server (or of the proxy in front of it), then the harness (www/harness.js) is
// added as a module script: it runs same-origin and imports the real client from
// <origin>/ferry/client.js over the network. No request passes through Playwright.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { waitFor, withTimeout } from './util.js';

const WWW = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../www');

export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  // Timers of a page must run on time: the buffering detector measures heartbeat arrival.
  '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

export function chromiumPath() {
  for (const p of [process.env.CHROMIUM_BIN, '/usr/bin/chromium', '/usr/bin/chromium-browser']) {
    if (p && fs.existsSync(p)) return p;
  }
  throw new Error('chromium is not installed (apt-get install chromium; scripts/test.sh does it)');
}

/** Launches a browser; the caller closes it (ctx.defer). */
export async function launchBrowser() {
  return chromium.launch({ executablePath: chromiumPath(), args: CHROMIUM_ARGS, headless: true, timeout: 30000 });
}

/**
 * Opens the harness at `origin` in a fresh context (fresh storage: no remembered transport)
 * with config {channels, options, upstream, debug}, or as one more tab of `context` (tabs of
 * one context share Web Locks and BroadcastChannel, as a browser's tabs of one origin do).
 * Console output, page errors, failed requests and WebSocket lifecycles go to logFile.
 * Returns a Harness.
 */
export async function openHarness(browser, {
  origin, channels, options = {}, upstream = 0, debug = true, logFile, base, credentials = false, cookies = [], context: tabOf,
}) {
  const context = tabOf ?? await browser.newContext();
  if (cookies.length) await context.addCookies(cookies);
  const page = await context.newPage();
  const log = fs.createWriteStream(logFile, { flags: 'a' });
  const t0 = Date.now();
  const stamp = () => `+${String(Date.now() - t0).padStart(6)}ms`;
  page.on('console', (m) => log.write(`${stamp()} console.${m.type()}: ${m.text()}\n`));
  page.on('pageerror', (e) => log.write(`${stamp()} pageerror: ${e.stack || e}\n`));
  page.on('requestfailed', (r) => log.write(`${stamp()} requestfailed: ${r.method()} ${r.url().replace(/session=[^&]+/, 'session=…')} ${r.failure()?.errorText}\n`));
  page.on('websocket', (ws) => {
    const u = ws.url().replace(/session=[^&]+/, 'session=…');
    log.write(`${stamp()} websocket open ${u}\n`);
    // Frames received, by type: shows whether heartbeats (ping) arrived at all.
    const types = {};
    let lastPing = null;
    ws.on('framereceived', ({ payload }) => {
      const t = /"t":"([a-z]+)"/.exec(typeof payload === 'string' ? payload : payload.toString())?.[1] ?? '?';
      types[t] = (types[t] || 0) + 1;
      if (t === 'ping') lastPing = Date.now() - t0;
    });
    ws.on('close', () => log.write(`${stamp()} websocket closed ${u} frames ${JSON.stringify(types)} last ping at ${lastPing} ms\n`));
    ws.on('socketerror', (e) => log.write(`${stamp()} websocket error ${u}: ${e}\n`));
  });

  const h = new Harness(context, page, log, origin, !tabOf);
  try {
    // A real document of the origin, fetched over the network: the page then runs
    // same-origin with the server (or proxy) and in the loopback address space. (A document
    // made up by request interception has no address space, and Chromium's Local Network
    // Access checks then block its WebSockets to 127.0.0.1.)
    const resp = await page.goto(`${origin}/healthz`, { waitUntil: 'load', timeout: 15000 });
    if (!resp || !resp.ok()) throw new Error(`GET ${origin}/healthz: HTTP ${resp?.status()}`);
    await page.evaluate((cfg) => { window.E2E_CFG = cfg; }, { channels, options, upstream, debug, base, credentials });
    await page.addScriptTag({ content: fs.readFileSync(path.join(WWW, 'boot.js'), 'utf8') });
    await page.addScriptTag({ type: 'module', content: fs.readFileSync(path.join(WWW, 'harness.js'), 'utf8') });
    await waitFor(() => page.evaluate(() => !!window.e2e || window.e2eBoot.errors.length > 0), {
      timeout: 10000, what: 'the harness page to start',
    });
    const boot = await page.evaluate(() => (window.e2e ? null : window.e2eBoot.errors));
    if (boot) {
      let why = '';
      try {
        const r = await fetch(`${origin}/ferry/client.js`, { signal: AbortSignal.timeout(3000) });
        why = ` (GET ${origin}/ferry/client.js: HTTP ${r.status} ${r.headers.get('content-type')})`;
      } catch (e) { why = ` (GET /ferry/client.js: ${e.message})`; }
      throw new Error(`the harness could not load the client${why}: ${boot.join('; ')}`);
    }
  } catch (e) {
    await h.close();
    throw e;
  }
  return h;
}

export class Harness {
  constructor(context, page, log, origin, ownContext = true) {
    this.context = context;
    this.ownContext = ownContext;
    this.page = page;
    this.log = log;
    this.origin = origin;
  }

  /** Everything the page recorded (see www/harness.js). */
  snapshot() { return withTimeout(this.page.evaluate(() => window.e2e.snapshot()), 15000, 'page snapshot'); }

  /** Cheap polls for waitFor. */
  state() { return this.page.evaluate(() => ({ state: ferry.state, transport: ferry.transport, n: e2e.msgs.length, shared: ferry.shared })); }
  count() { return this.page.evaluate(() => e2e.msgs.length); }

  /** Waits until the client is connected on `transport`; resolves ms since the page started. */
  async waitForTransport(transport, { timeout = 15000 } = {}) {
    await waitFor(async () => {
      const s = await this.state();
      return s.state === 'connected' && s.transport === transport;
    }, { timeout, interval: 50, what: `the client to be connected on ${transport}` });
    return this.page.evaluate(() => Date.now() - e2e.start);
  }

  stopUpstream() { return this.page.evaluate(() => e2e.stopUpstream()); }

  async close() {
    try { await withTimeout(this.page.evaluate(() => window.ferry && window.ferry.close()), 3000, 'ferry.close'); } catch {}
    try { await withTimeout(this.ownContext ? this.context.close() : this.page.close(), 10000, 'context.close'); } catch {}
    await new Promise((r) => this.log.end(r));
  }
}
