// Browser tests of the demo pages served by cmd/ferry (cmd/ferry/web): real Chromium driven by
// playwright-core, the real ferry binary built from this checkout, everything on 127.0.0.1.
//   node --test e2e/demo/
// Nothing is skipped: without Chromium the tests fail, saying how to install it. Every wait is
// on a condition with a deadline. Servers and the proxy are stopped in `after`, whatever
// happened; the binary's processes are also killed by PID if this process exits early
// (e2e/lib/util.js). Logs and screenshots: the run directory printed at the start
// (/tmp/ferry-e2e-*/demo), and the dashboard screenshot at /tmp/ferry-demo-dashboard.png.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { FerryNode } from '../lib/ferry.js';
import { launchBrowser } from '../lib/browser.js';
import { Publisher } from '../lib/publisher.js';
import { getRunDir, scenarioDir, waitFor } from '../lib/util.js';
import { analyze, decodePNG } from './png.js';
import { CutProxy } from './proxy.js';

const NAMES = { websocket: 'WebSocket', sse: 'SSE', longpoll: 'Long-polling' };
const SCREENSHOT = '/tmp/ferry-demo-dashboard.png';
const ACCENT = [0x0f, 0x76, 0x6e]; // the chart's line colour (#0f766e)
// A backstop for each test: every wait inside is bounded, this catches a hung browser call.
const T = { timeout: 180000 };

let browser;
let node;
let dir;
const started = []; // nodes and proxies to stop
const pages = []; // {page, name, errors}

before(async () => {
  dir = scenarioDir('demo');
  console.log(`# demo tests: logs in ${getRunDir()}/demo`);
  // The browser first: without Chromium there is nothing to test, and the error says why.
  browser = await launchBrowser();
  node = new FerryNode({ dir, name: 'ferry', flags: { demo: true, ticker: '200ms' } });
  started.push(node);
  await node.start();
});

after(async () => {
  for (const p of pages) await p.page.context().close().catch(() => {});
  await browser?.close().catch(() => {});
  for (const s of started.reverse()) {
    if (s instanceof CutProxy) await s.close();
    else await s.stop({ timeout: 10000 });
  }
});

/** A new tab on `url`; page errors and console errors are recorded (and fail the test). */
async function open(url, { context, name = 'page' } = {}) {
  const ctx = context ?? (await browser.newContext({ viewport: { width: 1280, height: 900 } }));
  const page = await ctx.newPage();
  const rec = { page, name, errors: [] };
  const log = fs.createWriteStream(path.join(dir, `${name}.log`), { flags: 'a' });
  page.on('console', (m) => {
    log.write(`${new Date().toISOString()} console.${m.type()}: ${m.text()}\n`);
    if (m.type() === 'error') rec.errors.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => {
    log.write(`${new Date().toISOString()} pageerror: ${e.stack || e}\n`);
    rec.errors.push(`pageerror: ${e.message}`);
  });
  pages.push(rec);
  const resp = await page.goto(url, { waitUntil: 'load', timeout: 15000 });
  assert.ok(resp && resp.ok(), `GET ${url}: HTTP ${resp?.status()}`);
  return rec;
}

function noErrors(...recs) {
  for (const r of recs) assert.deepEqual(r.errors, [], `${r.name} had errors`);
}

/** Waits until the page's transport panel says it is connected on `transport`. */
async function waitConnected(page, transport, timeout = 15000) {
  await page.waitForFunction((t) => {
    const b = document.querySelector('#transport');
    return b && b.dataset.state === 'connected' && (!t || b.dataset.transport === t);
  }, transport, { timeout, polling: 50 });
  const shown = await page.textContent('#transport');
  if (transport) assert.equal(shown.trim(), NAMES[transport], 'the badge names the transport');
  const actual = await page.evaluate(() => window.ferry.transport);
  if (transport) assert.equal(actual, transport, 'the client really is on that transport');
  return actual;
}

/** Types a message into the chat and sends it (Enter). */
async function say(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

/** Waits until the chat shows every one of texts; returns how often each appears. */
async function waitShown(page, texts, timeout = 15000) {
  await page.waitForFunction((want) => {
    const have = new Set([...document.querySelectorAll('#messages li.msg:not(.pending) .text')].map((e) => e.textContent));
    return want.every((t) => have.has(t));
  }, texts, { timeout, polling: 50 });
  return page.evaluate((want) => {
    const all = [...document.querySelectorAll('#messages li.msg .text')].map((e) => e.textContent);
    return want.map((t) => all.filter((x) => x === t).length);
  }, texts);
}

/** Messages by their chat id, counted as they arrived from the channel (not history). */
const arrivals = (page) => page.evaluate(() => Object.fromEntries(window.demo.arrivals));

async function chooseMode(page, mode) {
  await page.check(`input[name=mode][value=${mode}]`);
}

/** Log lines of the transport panel: {kind, text, from, to, reason}. */
const panelLog = (page) => page.$$eval('#lab-log li', (lis) => lis.map((li) => ({
  kind: li.dataset.kind, text: li.textContent, from: li.dataset.from, to: li.dataset.to, reason: li.dataset.reason,
})));

describe('demo pages', () => {
  test('the index links the three demos', T, async () => {
    const r = await open(`${node.url}/`, { name: 'index' });
    for (const href of ['/chat.html', '/dashboard.html', '/events.html']) {
      assert.ok(await r.page.$(`main a[href="${href}"]`), `index links ${href}`);
    }
    // What it promises of a restart is what the restart tests below show.
    const restart = await r.page.textContent('#restart-step');
    assert.match(restart, /no reset/, 'a restart resumes without a reset');
    assert.match(restart, /kill -9[\s\S]*reset/, 'a crash resets');
    noErrors(r);
    await r.page.close();
  });

  describe('chat room', () => {
    const room = `t${Date.now().toString(36)}`;
    let a, b;

    before(async () => {
      const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      a = await open(`${node.url}/chat.html?room=${room}`, { context, name: 'chat-a' });
      b = await open(`${node.url}/chat.html?room=${room}`, { context, name: 'chat-b' });
      await waitConnected(a.page);
      await waitConnected(b.page);
    });

    test('two tabs talk to each other through the channel', T, async () => {
      const [nameA, nameB] = await Promise.all([a, b].map((x) => x.page.inputValue('#name')));
      assert.notEqual(nameA, nameB, 'each tab has its own name');
      await say(a.page, 'hello from A');
      assert.deepEqual(await waitShown(b.page, ['hello from A']), [1], 'B shows A\'s message once');
      await say(b.page, 'hello from B');
      assert.deepEqual(await waitShown(a.page, ['hello from B']), [1], 'A shows B\'s message once');
      assert.deepEqual(await waitShown(a.page, ['hello from A']), [1], 'A shows its own message once');
      // The sender's own message is drawn as its own.
      assert.ok(await a.page.$('#messages li.msg.mine >> text=hello from A'));
      // Recently active lists both people.
      await b.page.waitForFunction(([x, y]) => {
        const t = document.querySelector('#people').textContent;
        return t.includes(x) && t.includes(y);
      }, [nameA, nameB], { timeout: 10000 });
      noErrors(a, b);
    });

    test('a tab opened later shows the recent messages from history', T, async () => {
      const c = await open(`${node.url}/chat.html?room=${room}`, { context: a.page.context(), name: 'chat-c' });
      // From GET /ferry/api/history, not from the stream: C subscribes after the snapshot.
      assert.deepEqual(await waitShown(c.page, ['hello from A', 'hello from B'], 10000), [1, 1]);
      assert.equal(Object.keys(await arrivals(c.page)).length, 0, 'nothing came twice through the stream');
      await waitConnected(c.page);
      noErrors(c);
      await c.page.close();
    });

    test('forcing each transport from the page: the page says so and messages still flow', T, async () => {
      for (const t of ['sse', 'longpoll', 'websocket']) {
        // B keeps talking while A switches: A must get every message, once.
        const burst = Array.from({ length: 6 }, (_, i) => `B to A ${t} #${i}`);
        // A's own message right before the switch: the old client may be closed before its
        // ack, and the page sends it again on the new one; B must show it once.
        const before = `A just before switching to ${t}`;
        await say(a.page, before);
        await chooseMode(a.page, t);
        for (const m of burst.slice(0, 3)) await say(b.page, m);
        await waitConnected(a.page, t);
        for (const m of burst.slice(3)) await say(b.page, m);
        assert.deepEqual(await waitShown(a.page, burst), burst.map(() => 1), `A on ${t} shows each of B's messages once`);
        const toB = `A to B on ${t}`;
        await say(a.page, toB);
        assert.deepEqual(await waitShown(b.page, [before, toB]), [1, 1], `B gets what A sent around the switch to ${t}, once`);
        assert.equal(new URL(a.page.url()).searchParams.get('transport'), t, 'the URL keeps the choice');
        const log = await panelLog(a.page);
        assert.ok(log.some((l) => l.kind === 'transport' && l.to === t), `the panel's log shows the move to ${t}`);
      }
      const counts = await arrivals(a.page);
      const twice = Object.entries(counts).filter(([, n]) => n !== 1);
      assert.deepEqual(twice, [], 'no message reached A twice across the switches');
      await chooseMode(a.page, 'auto');
      await waitConnected(a.page);
      noErrors(a, b);
    });

    test('blocking transports: the client falls back, says why, and the conversation carries on', T, async () => {
      await chooseMode(a.page, 'auto');
      await waitConnected(a.page, 'websocket', 20000);

      await a.page.check('input[name=block][value=websocket]');
      await say(b.page, 'while A loses its WebSocket');
      await waitConnected(a.page, 'sse');
      let log = await panelLog(a.page);
      const down1 = log.find((l) => l.kind === 'transport' && l.from === 'websocket' && l.to === 'sse');
      assert.ok(down1, `the log shows WebSocket → SSE: ${JSON.stringify(log.slice(0, 6))}`);
      assert.match(down1.reason, /^ws-closed-1006/, 'with the reason the client gave');
      assert.match(down1.text, /closed without a close frame/, 'explained in words');

      await a.page.check('input[name=block][value=sse]');
      await say(b.page, 'while A loses SSE too');
      await waitConnected(a.page, 'longpoll');
      log = await panelLog(a.page);
      assert.ok(log.some((l) => l.kind === 'transport' && l.to === 'longpoll'), 'the log shows the move to long-polling');

      assert.deepEqual(await waitShown(a.page, ['while A loses its WebSocket', 'while A loses SSE too']), [1, 1]);
      await say(a.page, 'A on long-polling');
      assert.deepEqual(await waitShown(b.page, ['A on long-polling']), [1]);

      // Unblocked, the client's background probe brings it back to WebSocket (5 s, then
      // doubling after each failed probe: a bounded but generous deadline).
      await a.page.uncheck('input[name=block][value=sse]');
      await a.page.uncheck('input[name=block][value=websocket]');
      await waitConnected(a.page, 'websocket', 90000);
      log = await panelLog(a.page);
      assert.ok(log.some((l) => l.kind === 'transport' && l.to === 'websocket' && l.reason === 'upgrade'), 'moved up by an upgrade probe');
      await say(b.page, 'A is back on WebSocket');
      assert.deepEqual(await waitShown(a.page, ['A is back on WebSocket']), [1]);
      const twice = Object.entries(await arrivals(a.page)).filter(([, n]) => n !== 1);
      assert.deepEqual(twice, [], 'no message reached A twice');
      noErrors(a, b);
    });

    test('who is in the room: tabs list each other, a long-polling one stays, a closed one leaves', T, async () => {
      // A node of its own with short heartbeats, so that presence expires in seconds: cmd/ferry
      // keeps a member for 2 × max(heartbeat, poll hold) without a refresh, here 6 s (about a
      // minute by default), and sweeps the expired every quarter of that.
      const TTL = 6000;
      const n3 = new FerryNode({ dir, name: 'ferry-presence', flags: { demo: true, ticker: '0', heartbeat: '1s', 'poll-hold': '3s' } });
      started.push(n3);
      await n3.start();
      const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      const url = `${n3.url}/chat.html?room=presence`;
      const x = await open(url, { context, name: 'presence-a' });
      const y = await open(`${url}&transport=longpoll`, { context, name: 'presence-b' });
      await waitConnected(x.page);
      await waitConnected(y.page, 'longpoll');
      const sid = (r) => r.page.evaluate(() => window.ferry.sid);
      const [sx, sy] = [await sid(x), await sid(y)];
      /** Waits until the member list of r shows every session of `want` and none of `gone`. */
      const waitMembers = (r, want, gone = [], timeout = 15000) => r.page.waitForFunction(([w, g]) => {
        const shown = new Set([...document.querySelectorAll('#members li[data-session]')].map((li) => li.dataset.session));
        return w.every((s) => shown.has(s)) && g.every((s) => !shown.has(s));
      }, [want, gone], { timeout, polling: 100 });
      const leaves = (r, s) => r.page.evaluate((s) => window.demo.presenceLog.filter((e) => e.event === 'leave' && e.session === s).length, s);

      await waitMembers(x, [sx, sy]);
      await waitMembers(y, [sx, sy]);
      assert.equal(await x.page.getAttribute(`#members li[data-session="${sx}"]`, 'data-you'), 'true', 'A marks itself');
      assert.equal(await x.page.getAttribute(`#members li[data-session="${sy}"]`, 'data-you'), 'false');
      assert.equal(await x.page.textContent('#members-count'), '2');
      // Presence knows sessions; once A speaks, B puts A's chat name on A's session.
      const nameX = await x.page.inputValue('#name');
      await say(x.page, 'A is in the room');
      await y.page.waitForFunction(([s, n]) => document.querySelector(`#members li[data-session="${s}"]`)?.textContent.includes(n),
        [sx, nameX], { timeout: 10000, polling: 100 });

      // B long-polls, each poll continuing the one before: its presence is refreshed by the
      // polls themselves. A keeps listing it for more than twice the TTL, and never sees it leave.
      await x.page.waitForFunction(([s, ttl]) => Date.now() - window.demo.members.get(s)?.since > 2 * ttl,
        [sy, TTL], { timeout: 4 * TTL, polling: 250 });
      assert.equal(await leaves(x, sy), 0, 'A never saw the long-polling tab leave');
      assert.equal(await y.page.evaluate(() => window.ferry.transport), 'longpoll', 'B was long-polling all along');

      // A third tab comes in and is closed: both others list it, then drop it once its presence
      // expires (a TTL and a sweep after its last heartbeat; the deadline has slack for a loaded machine).
      const z = await open(url, { context, name: 'presence-c' });
      await waitConnected(z.page);
      const sz = await sid(z);
      await waitMembers(x, [sx, sy, sz]);
      await waitMembers(y, [sx, sy, sz]);
      await z.page.close();
      await waitMembers(x, [sx, sy], [sz], 3 * TTL);
      await waitMembers(y, [sx, sy], [sz], 3 * TTL);
      assert.equal(await leaves(x, sz), 1, 'A saw the closed tab leave, once');
      assert.equal(await leaves(x, sy), 0, 'and still no leave of the long-polling tab');
      noErrors(x, y, z);
    });
  });

  describe('live dashboard', () => {
    let d;
    before(async () => {
      d = await open(`${node.url}/dashboard.html`, { name: 'dashboard' });
      await waitConnected(d.page);
    });

    test('draws the ticker: the screenshot is not blank', T, async () => {
      const { page } = d;
      // Enough of the channel to draw a line: history plus a few live messages.
      await page.waitForFunction(() => window.demo?.points.size >= 40 && window.demo?.stats.live >= 5, null, { timeout: 20000, polling: 100 });
      // Let the newest message reach the canvas (drawn on the next animation frame).
      await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
      await page.screenshot({ path: SCREENSHOT, fullPage: true });

      // The analysis can fail: a blank page of the same size has one colour and no line.
      const blank = await open(`${node.url}/healthz`, { name: 'blank' });
      await blank.page.setContent('<body style="margin:0;background:#fff"></body>');
      const empty = analyze(decodePNG(await blank.page.screenshot()), { ink: ACCENT });
      assert.ok(empty.colors <= 2 && empty.inkPixels === 0, `a blank page reads as blank: ${JSON.stringify(empty)}`);
      await blank.page.close();

      // The chart's area of the screenshot: the line colour across many columns, shades.
      const box = await page.locator('#chart').boundingBox();
      const img = decodePNG(fs.readFileSync(SCREENSHOT));
      const rect = { x0: Math.ceil(box.x), y0: Math.ceil(box.y), x1: Math.floor(box.x + box.width), y1: Math.floor(box.y + box.height) };
      const shot = analyze(img, { ink: ACCENT, rect });
      assert.ok(shot.colors >= 20, `the chart area has many colours (line, fill, grid, labels): ${JSON.stringify(shot)}`);
      assert.ok(shot.inkPixels >= 150, `the line is drawn: ${JSON.stringify(shot)}`);
      assert.ok(shot.inkColumns >= shot.width * 0.05, `the line spans the chart: ${JSON.stringify(shot)}`);
      assert.ok(shot.notBackground >= shot.total * 0.02, `not a blank chart: ${JSON.stringify(shot)}`);

      // And the canvas itself, read back from the page.
      const px = await page.evaluate(() => {
        const c = document.querySelector('#chart');
        const g = c.getContext('2d');
        const { data } = g.getImageData(0, 0, c.width, c.height);
        let line = 0, notWhite = 0;
        const colors = new Set();
        for (let i = 0; i < data.length; i += 4) {
          const [r, gg, b] = [data[i], data[i + 1], data[i + 2]];
          colors.add((r << 16) | (gg << 8) | b);
          if (r < 250 || gg < 250 || b < 250) notWhite++;
          if (Math.abs(r - 15) < 40 && Math.abs(gg - 118) < 40 && Math.abs(b - 110) < 40) line++;
        }
        return { colors: colors.size, notWhite, line, total: data.length / 4 };
      });
      assert.ok(px.colors >= 20 && px.line >= 150 && px.notWhite >= px.total * 0.02, `canvas pixels: ${JSON.stringify(px)}`);

      // The numbers beside it.
      const value = await page.textContent('#value');
      assert.match(value, /^-?\d+\.\d\d$/, 'the current value is shown');
      assert.equal(await page.textContent('#gaps'), '0');
      noErrors(d);
    });

    test('forcing each transport: the ticker keeps flowing with no gap', T, async () => {
      const { page } = d;
      for (const t of ['longpoll', 'sse', 'websocket']) {
        await chooseMode(page, t);
        await waitConnected(page, t);
        const n0 = await page.evaluate(() => window.demo?.stats.live);
        await page.waitForFunction((n) => window.demo?.stats.live >= n + 5, n0, { timeout: 10000, polling: 100 });
        assert.equal(Number(await page.textContent('#count')) >= n0 + 5, true, 'the page counts what arrives');
        // The send → ack round trip is measured on whatever transport carries the session.
        await page.waitForFunction(() => /\d+ ms/.test(document.querySelector('#rtt').textContent), null, { timeout: 10000 });
      }
      assert.equal(await page.evaluate(() => window.demo?.stats.gaps), 0, 'no offset was skipped across the switches');
      assert.equal(await page.textContent('#gaps'), '0');
      noErrors(d);
    });
  });

  test('plain EventSource page on two channels rides through cut connections and resumes both by Last-Event-ID with no gap', T, async () => {
    const proxy = await new CutProxy(node.port).start();
    started.push(proxy);
    const tag = Date.now().toString(36);
    const channels = [`feed:a${tag}`, `feed:b${tag}`];
    const e = await open(`${proxy.url}/events.html?${channels.map((c) => `channel=${encodeURIComponent(c)}`).join('&')}`, { name: 'events' });
    const { page } = e;
    const state = () => page.evaluate(() => ({
      opens: window.demo?.opens, n: window.demo?.received.length, lastId: window.demo.lastId,
    }));
    await page.waitForFunction(() => window.demo?.opens === 1, null, { timeout: 10000 });

    const pub = new Publisher({ url: node.url, channels, rate: 25 });
    pub.start();
    try {
      await page.waitForFunction(() => window.demo?.received.length >= 15, null, { timeout: 10000, polling: 50 });
      for (let cut = 1; cut <= 2; cut++) {
        const before = await state();
        const sockets = proxy.cut();
        assert.ok(sockets > 0, 'the cut closed live connections');
        // The browser notices, waits for the server's retry hint (2 s) and reconnects.
        await page.waitForFunction((n) => window.demo?.opens >= n, cut + 1, { timeout: 15000, polling: 50 });
        await page.waitForFunction((n) => window.demo?.received.length >= n, before.n + 15, { timeout: 10000, polling: 50 });
      }
    } finally {
      await pub.stop();
    }
    assert.deepEqual(pub.unknown, [], 'every publish was answered');
    const total = pub.count;
    assert.ok(total >= 45, `published ${total}`);
    // Wait for the tail to arrive; if it never does, the comparison below names what is missing.
    await waitFor(async () => (await state()).n >= total, { timeout: 10000, what: 'the tail' }).catch(() => {});

    const received = await page.evaluate(() => window.demo?.received.map((r) => ({ ch: r.ch, seq: r.data.seq })));
    for (const channel of channels) {
      const got = received.filter((r) => r.ch === channel).map((r) => r.seq);
      const want = [...pub.accepted.get(channel).keys()].sort((x, y) => x - y);
      assert.ok(want.length > 0, `${channel}: nothing published`);
      assert.deepEqual(want, Array.from({ length: want.length }, (_, i) => i + 1), `${channel}: the publisher numbered 1..n`);
      assert.deepEqual(got, want, `${channel}: the page received every number once, in order`);
    }

    // The reconnects were resumes: the browser sent the last id it had, and messages were
    // published while it was away (so a reconnect "from now" would have lost them).
    const s = await page.evaluate(() => ({ idsAtOpen: window.demo.idsAtOpen, lastId: window.demo.lastId }));
    const streams = proxy.requests.filter((r) => r.path.startsWith('/ferry/events'));
    assert.equal(streams.length, 3, `three event streams: ${JSON.stringify(streams)}`);
    assert.equal(streams[0].lastEventId, null, 'the first one without Last-Event-ID');
    for (let i = 1; i <= 2; i++) {
      // One id carries the position of every channel of the stream.
      const entries = (streams[i].lastEventId ?? '').split(',');
      assert.deepEqual(entries.map((x) => x.split('=')[0]).sort(), [...channels].sort(), `reconnect ${i}: Last-Event-ID ${streams[i].lastEventId} names both channels`);
      for (const x of entries) assert.match(x, /=[A-Za-z0-9]+\.\d+$/, `reconnect ${i}: ${x} is a position`);
      assert.equal(streams[i].lastEventId, s.idsAtOpen[i], 'the id the page had when the stream was cut');
      const cutAt = proxy.cuts[i - 1].t;
      const during = channels.flatMap((c) => [...pub.accepted.get(c).values()]).filter((m) => m.t > cutAt && m.t < streams[i].t).length;
      assert.ok(during > 0, `messages were published during cut ${i} (${during})`);
    }
    // What the page shows.
    assert.equal(await page.textContent('#reconnects'), '2');
    assert.equal(await page.textContent('#count'), String(total));
    assert.equal(await page.textContent('#last-id'), s.lastId);
    // The proxy's cuts show up as console errors of the failed streams; nothing else may.
    const unexpected = e.errors.filter((x) => !/ERR_(EMPTY_RESPONSE|CONNECTION_RESET|INCOMPLETE_CHUNKED_ENCODING|NETWORK_CHANGED)|EventSource/.test(x));
    assert.deepEqual(unexpected, []);
  });

  test('after a server restart (SIGTERM) the chat resumes: same epoch, no reset, nothing lost or repeated', T, async () => {
    // The server's defaults, as `go run ./cmd/ferry` has them: no --secret, no --state-file;
    // the data directory keeps both across the restart.
    const n2 = new FerryNode({ dir, name: 'ferry-restart', flags: { demo: true, ticker: '0', secret: undefined } });
    started.push(n2);
    await n2.start();
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const a = await open(`${n2.url}/chat.html?room=restart`, { context, name: 'restart-a' });
    const b = await open(`${n2.url}/chat.html?room=restart`, { context, name: 'restart-b' });
    await waitConnected(a.page);
    await waitConnected(b.page);
    await say(a.page, 'before the restart');
    await waitShown(b.page, ['before the restart']);
    const epoch0 = await b.page.evaluate(() => window.demo.epoch);

    const st = await n2.restart();
    assert.equal(st?.code, 0, `the server stopped cleanly on SIGTERM: ${JSON.stringify(st)}`);
    // The pages lose the connection and come back.
    await b.page.waitForFunction(() => [...document.querySelectorAll('#lab-log li')].some((li) => /4003|shutting down|1006|closed/i.test(li.textContent)), null, { timeout: 20000 });
    await waitConnected(b.page, undefined, 30000);
    await waitConnected(a.page, undefined, 30000);
    await say(a.page, 'after the restart');
    assert.deepEqual(await waitShown(b.page, ['before the restart', 'after the restart']), [1, 1], 'each message once');
    await say(b.page, 'B after the restart');
    assert.deepEqual(await waitShown(a.page, ['before the restart', 'B after the restart']), [1, 1]);
    for (const r of [a, b]) {
      assert.equal(await r.page.evaluate(() => window.demo.epoch), epoch0, `${r.name}: the same epoch`);
      const resets = (await panelLog(r.page)).filter((l) => l.kind === 'reset');
      assert.deepEqual(resets, [], `${r.name}: no reset`);
      assert.doesNotMatch(await r.page.textContent('#messages'), /reset/, `${r.name}: the chat shows no reset`);
    }
    // The client logs the lost connection itself; the page adds no error of its own.
    for (const r of [a, b]) r.errors = r.errors.filter((x) => !/WebSocket|ERR_CONNECTION_REFUSED|Failed to load resource/.test(x));
    noErrors(a, b);
  });

  test('after a crash (SIGKILL) the chat resets, reloads its snapshot and carries on', T, async () => {
    const n2 = new FerryNode({ dir, name: 'ferry-crash', flags: { demo: true, ticker: '0', secret: undefined } });
    started.push(n2);
    await n2.start();
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const a = await open(`${n2.url}/chat.html?room=crash`, { context, name: 'crash-a' });
    const b = await open(`${n2.url}/chat.html?room=crash`, { context, name: 'crash-b' });
    await waitConnected(a.page);
    await waitConnected(b.page);
    await say(a.page, 'before the crash');
    await waitShown(b.page, ['before the crash']);
    const epoch0 = await b.page.evaluate(() => window.demo.epoch);

    await n2.stop({ signal: 'SIGKILL' });
    await n2.start();
    // Nothing was saved: the channel comes back with a new epoch, the client says reset and
    // the page reloads history, never showing the new messages as if nothing had happened.
    await b.page.waitForFunction(() => document.querySelector('#lab-log li[data-kind="reset"]'), null, { timeout: 30000 });
    await waitConnected(b.page, undefined, 30000);
    await waitConnected(a.page, undefined, 30000);
    const epoch1 = await b.page.evaluate(() => window.demo.epoch);
    assert.notEqual(epoch1, epoch0, 'a new epoch');
    assert.match(await b.page.textContent('#messages'), /reset/, 'the chat says it reloaded after a reset');
    await say(a.page, 'after the crash');
    assert.deepEqual(await waitShown(b.page, ['after the crash']), [1]);
    await say(b.page, 'B after the crash');
    assert.deepEqual(await waitShown(a.page, ['B after the crash']), [1]);
    for (const r of [a, b]) r.errors = r.errors.filter((x) => !/WebSocket|ERR_CONNECTION_REFUSED|Failed to load resource/.test(x));
    noErrors(a, b);
  });
});
