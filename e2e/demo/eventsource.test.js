// Issue 21: what a dashboard author relies on when reading GET /ferry/events with the
// browser's own EventSource and no client library (docs/PROTOCOL.md §5), in real Chromium
// against the real ferry binary, through real nginx where a proxy matters:
//   - ?since= positions the first connection (a new EventSource can't set Last-Event-ID);
//   - the stream's retry: hint sets the browser's reconnect delay;
//   - comment heartbeats keep a quiet stream open through a proxy that cuts idle ones;
//   - cross-origin, anonymous and with credentials (withCredentials and a cookie token);
//   - a lapsed identity (an expiring JWT) ends the stream with a close event, for good.
// Several channels on one stream and the resume by Last-Event-ID through cut connections,
// nothing lost or repeated, are the plain EventSource test of demo.test.js.
//   node --test e2e/demo/
// Every wait is on an event with a deadline; the only fixed waits are the quiet periods
// under test (a stream left idle for longer than the proxy allows).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { API_KEY, FerryNode } from '../lib/ferry.js';
import { launchBrowser } from '../lib/browser.js';
import { Nginx } from '../lib/nginx.js';
import { delay, freePort, getRunDir, scenarioDir, waitFor } from '../lib/util.js';
import { CutProxy } from './proxy.js';

const T = { timeout: 120000 }; // a backstop per test: every wait inside is bounded
const TOKEN_KEY = 'e2e-eventsource-token-key-0123456789';
const RETRY_MS = 2000; // the server's hint (PROTOCOL.md §5)
const CHROMIUM_DEFAULT_RETRY_MS = 3000; // what Chromium waits without a hint

let browser;
let dir;
const stoppers = []; // run in reverse in `after`
let tags = 0;

before(async () => {
  dir = scenarioDir('eventsource');
  console.log(`# bare EventSource tests: logs in ${getRunDir()}/eventsource`);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close().catch(() => {});
  for (const stop of stoppers.reverse()) await stop().catch(() => {});
});

/** A server node with flags, stopped after the tests. */
async function startNode(name, flags = {}) {
  const n = new FerryNode({ dir, name, flags });
  stoppers.push(() => n.stop({ timeout: 10000 }));
  await n.start();
  return n;
}

/** nginx with template in front of nodes, stopped after the tests. */
async function startNginx(name, template, nodes, { port = 0 } = {}) {
  const ng = new Nginx({ dir, name, template, upstreams: nodes.map((n) => n.addr), port });
  stoppers.push(() => ng.stop());
  await ng.start();
  return ng;
}

/** A channel name no other test uses. */
const channel = (what) => `dash:${what}${Date.now().toString(36)}${tags++}`;

/** Publishes data to ch through the API; returns the position the server gave it. */
async function publish(node, ch, data) {
  const r = await fetch(`${node.url}/ferry/api/publish`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel: ch, data }),
    signal: AbortSignal.timeout(5000),
  });
  const body = await r.text();
  assert.equal(r.status, 200, `publish to ${ch}: ${body}`);
  return JSON.parse(body).position;
}

/** An HS256 JWT for sub that expires in expSeconds. */
function jwt(sub, expSeconds) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, iat: now, exp: now + expSeconds })}`;
  return `${head}.${crypto.createHmac('sha256', TOKEN_KEY).update(head).digest('base64url')}`;
}

/**
 * Opens a tab on pageUrl (an origin for the page) and, in it, a bare EventSource on
 * streamUrl listening to the events named `names` (the channels; reset and close are always
 * listened to). Everything the page sees is recorded in window.rec: opens and errors with
 * their times and readyState, and every event {type, id (lastEventId), data, t}.
 * Returns {page, rec(), errors}.
 */
async function openStream(pageUrl, streamUrl, names, { withCredentials = false, cookies = [], name = 'page' } = {}) {
  const context = await browser.newContext();
  stoppers.push(() => context.close());
  if (cookies.length) await context.addCookies(cookies);
  const page = await context.newPage();
  const errors = [];
  const log = fs.createWriteStream(path.join(dir, `${name}.log`), { flags: 'a' });
  page.on('console', (m) => log.write(`${new Date().toISOString()} console.${m.type()}: ${m.text()}\n`));
  page.on('pageerror', (e) => { errors.push(e.message); log.write(`pageerror: ${e.stack}\n`); });
  page.on('requestfailed', (r) => log.write(`${new Date().toISOString()} requestfailed: ${r.url()} ${r.failure()?.errorText}\n`));
  page.on('response', (r) => log.write(`${new Date().toISOString()} response: ${r.status()} ${r.url()}\n`));
  const resp = await page.goto(pageUrl, { waitUntil: 'load', timeout: 15000 });
  assert.ok(resp?.ok(), `GET ${pageUrl}: HTTP ${resp?.status()}`);
  await page.evaluate(({ url, names, withCredentials }) => {
    const rec = { opens: [], errors: [], events: [] };
    window.rec = rec;
    const es = new EventSource(url, { withCredentials });
    window.es = es;
    es.onopen = () => rec.opens.push(Date.now());
    es.onerror = () => rec.errors.push({ t: Date.now(), state: es.readyState });
    for (const type of [...names, 'reset', 'close', 'message']) {
      es.addEventListener(type, (e) => {
        let data;
        try { data = JSON.parse(e.data); } catch { data = e.data; }
        rec.events.push({ type: e.type, id: e.lastEventId, data, t: Date.now() });
      });
    }
  }, { url: streamUrl, names, withCredentials });
  const rec = () => page.evaluate(() => ({ ...window.rec, state: window.es.readyState }));
  return { page, rec, errors };
}

/** Waits until the page's record satisfies cond(rec); returns the record. */
async function until(s, cond, what, timeout = 10000) {
  return waitFor(async () => {
    const r = await s.rec();
    return cond(r) ? r : false;
  }, { timeout, interval: 50, what });
}

const of = (r, type) => r.events.filter((e) => e.type === type);
const seqs = (r, type) => of(r, type).map((e) => e.data.seq);
const streamURL = (base, chans, extra = '') => `${base}/ferry/events?${chans.map((c) => `channel=${encodeURIComponent(c)}`).join('&')}${extra}`;

describe('bare EventSource on /ferry/events', () => {
  let node;
  before(async () => {
    node = await startNode('ferry');
  });

  test('?since= starts the first connection after the given positions, on every channel of the stream', T, async () => {
    const [a, b] = [channel('a'), channel('b')];
    const pos = { [a]: [], [b]: [] };
    for (let i = 1; i <= 5; i++) pos[a].push(await publish(node, a, { seq: i }));
    for (let i = 1; i <= 3; i++) pos[b].push(await publish(node, b, { seq: i }));
    // After a's second and b's first message; a position of a channel the query does not
    // list is ignored.
    const since = `${a}=${pos[a][1]},${b}=${pos[b][0]},other:ch=${pos[a][0]}`;
    const s = await openStream(`${node.url}/healthz`, streamURL(node.url, [a, b], `&since=${encodeURIComponent(since)}`), [a, b], { name: 'since' });
    let r = await until(s, (x) => of(x, a).length >= 3 && of(x, b).length >= 2, 'the history after ?since=');
    // Live messages follow the replayed ones on the same stream.
    await publish(node, a, { seq: 6 });
    await publish(node, b, { seq: 4 });
    r = await until(s, (x) => of(x, a).length >= 4 && of(x, b).length >= 3, 'the live messages');
    assert.deepEqual(seqs(r, a), [3, 4, 5, 6], `${a}: after the given position, each once, in order`);
    assert.deepEqual(seqs(r, b), [2, 3, 4], `${b}: after the given position, each once, in order`);
    assert.equal(r.opens.length, 1);
    assert.deepEqual(r.errors, []);
    // Each event's id is the position of every channel of the stream, as of that event.
    const ids = of(r, a).slice(0, 3).map((e) => Object.fromEntries(e.id.split(',').map((x) => x.split('='))));
    for (const [i, id] of ids.entries()) {
      assert.deepEqual(Object.keys(id).sort(), [a, b].sort(), `the id ${JSON.stringify(id)} names both channels, nothing else`);
      assert.equal(id[a], pos[a][i + 2], `the id of ${a} #${i + 3} is its position`);
    }
    const last = Object.fromEntries(r.events.at(-1).id.split(',').map((x) => x.split('=')));
    assert.equal(Object.keys(last).length, 2);
    assert.deepEqual(of(r, 'reset'), [], 'no reset: history covered the positions');

    // A malformed ?since= is refused (400), which ends an EventSource for good.
    const bad = await openStream(`${node.url}/healthz`, streamURL(node.url, [a], '&since=nonsense'), [a], { name: 'since-bad' });
    const rb = await until(bad, (x) => x.state === 2 && x.errors.length > 0, 'the refused stream to close');
    assert.equal(rb.opens.length, 0);
    const direct = await fetch(streamURL(node.url, [a], '&since=nonsense'), { signal: AbortSignal.timeout(5000) });
    assert.equal(direct.status, 400, 'a malformed since is answered 400');
  });

  test('the retry: hint sets the reconnect delay, and the reconnect resumes by Last-Event-ID', T, async (t) => {
    const proxy = await new CutProxy(node.port).start();
    stoppers.push(() => proxy.close());
    const ch = channel('retry');
    const s = await openStream(`${proxy.url}/healthz`, streamURL(proxy.url, [ch]), [ch], { name: 'retry' });
    await until(s, (x) => x.opens.length === 1, 'the first open');
    let seq = 0;
    const delays = [];
    for (let cut = 1; cut <= 2; cut++) {
      await publish(node, ch, { seq: ++seq });
      await until(s, (x) => of(x, ch).length === seq, `message ${seq}`);
      const before = proxy.requests.filter((q) => q.path.startsWith('/ferry/events')).length;
      assert.ok(proxy.cut() > 0, 'the cut closed the stream');
      const cutAt = proxy.cuts.at(-1).t;
      // Published while the browser waits: the reconnect must bring it.
      await publish(node, ch, { seq: ++seq });
      await until(s, (x) => x.opens.length === cut + 1, `reopen ${cut}`, 15000);
      const req = proxy.requests.filter((q) => q.path.startsWith('/ferry/events'))[before];
      assert.ok(req, 'the reconnect went through the proxy');
      delays.push(req.t - cutAt);
      assert.ok(req.lastEventId, `reconnect ${cut} sent Last-Event-ID`);
      await until(s, (x) => of(x, ch).length === seq, `message ${seq}, published during cut ${cut}`);
    }
    const r = await s.rec();
    t.diagnostic(`reconnect delays after the cuts: ${delays.join(', ')} ms`);
    assert.deepEqual(seqs(r, ch), Array.from({ length: seq }, (_, i) => i + 1), 'every message once, in order');
    // The browser waited the hinted 2 s each time: never less (the hint is a floor), and
    // below Chromium's own 3 s default at least once (so the hint, not the default, set it).
    for (const d of delays) assert.ok(d >= RETRY_MS - 100, `reconnect after ${d} ms, sooner than the ${RETRY_MS} ms hint`);
    assert.ok(Math.min(...delays) < CHROMIUM_DEFAULT_RETRY_MS - 100, `reconnects after ${delays} ms: the hint was not honoured`);
  });

  test('comment heartbeats keep a quiet stream open through a proxy that cuts idle ones', T, async () => {
    // nginx idle-cut.conf: proxy_read_timeout 5s. Heartbeats every 2 s keep the stream alive;
    // the control, heartbeats every 30 s, shows that the proxy does cut a quiet stream here.
    const QUIET = 12000; // more than twice the proxy's timeout
    const live = await startNode('ferry-hb2', { heartbeat: '2s' });
    const slow = await startNode('ferry-hb30', { heartbeat: '30s' });
    const ngLive = await startNginx('idle-live', 'idle-cut', [live]);
    const ngSlow = await startNginx('idle-slow', 'idle-cut', [slow]);
    const ch = channel('quiet');
    const s = await openStream(`${ngLive.url}/healthz`, streamURL(ngLive.url, [ch]), [ch], { name: 'heartbeat' });
    const c = await openStream(`${ngSlow.url}/healthz`, streamURL(ngSlow.url, [ch]), [ch], { name: 'heartbeat-control' });
    // A stream without a position starts at the channel's tail when Ferry takes it, which is
    // before its response head: once open, a publish can't fall before it.
    await until(s, (x) => x.opens.length === 1, 'the stream to open');
    await until(c, (x) => x.opens.length === 1, 'the control stream to open');
    await publish(live, ch, { seq: 1 });
    await publish(slow, ch, { seq: 1 });
    await until(s, (x) => of(x, ch).length === 1, 'the first message');
    await until(c, (x) => of(x, ch).length === 1, 'the first message (control)');
    await delay(QUIET); // the quiet period under test: nothing is published
    await publish(live, ch, { seq: 2 });
    await publish(slow, ch, { seq: 2 });
    const r = await until(s, (x) => of(x, ch).length === 2, 'the message after the quiet period');
    assert.deepEqual(seqs(r, ch), [1, 2]);
    assert.equal(r.opens.length, 1, 'the stream never reopened');
    assert.deepEqual(r.errors, [], 'the stream never failed');
    assert.deepEqual(ngLive.errors(/upstream timed out/), [], 'nginx never timed the stream out');
    // The control: cut by the proxy, reconnected (and resumed) by the browser.
    const rc = await until(c, (x) => of(x, ch).length === 2, 'the control\'s message after the quiet period');
    assert.ok(rc.errors.length >= 1 && rc.opens.length >= 2, `the control stream was cut and reopened: ${JSON.stringify({ opens: rc.opens.length, errors: rc.errors.length })}`);
    assert.ok(ngSlow.errors(/upstream timed out/).length >= 1, 'nginx timed the control stream out');
    assert.deepEqual(seqs(rc, ch), [1, 2], 'the control resumed without loss');
  });
});

describe('bare EventSource across origins', () => {
  // The page on one origin of nginx (cross-origin.conf: {{PORT}}), the stream on another
  // ({{PORT2}}, Ferry's), which lets /ferry/events through.
  async function setup(name, flags) {
    const appPort = await freePort();
    const app = `http://127.0.0.1:${appPort}`;
    const n = await startNode(name, { 'allowed-origins': app, ...flags });
    const ng = await startNginx(`${name}-nginx`, 'cross-origin', [n], { port: appPort });
    return { n, ng, app };
  }

  test('anonymous: events arrive cross-origin; a page of another origin is refused', T, async () => {
    const { n, ng, app } = await setup('ferry-xo-anon', {});
    const ch = channel('xo');
    const s = await openStream(`${app}/healthz`, streamURL(ng.url2, [ch]), [ch], { name: 'xo-anon' });
    await until(s, (x) => x.opens.length === 1, 'the cross-origin stream to open');
    for (let i = 1; i <= 3; i++) await publish(n, ch, { seq: i });
    const r = await until(s, (x) => of(x, ch).length === 3, 'three messages');
    assert.deepEqual(seqs(r, ch), [1, 2, 3]);
    assert.deepEqual(r.errors, []);
    // The same page served from an origin Ferry does not allow: 403, the EventSource closes.
    const other = await openStream(`${ng.url2}/healthz`, streamURL(ng.url2, [ch]), [ch], { name: 'xo-same' });
    await until(other, (x) => x.opens.length === 1, 'the same-origin stream (always allowed)');
    const res = await fetch(streamURL(ng.url2, [ch]), { headers: { Origin: 'http://evil.example' }, signal: AbortSignal.timeout(5000) });
    assert.equal(res.status, 403, 'a foreign origin is refused');
    await res.body?.cancel();
    const gotACAO = await fetch(streamURL(ng.url2, [ch]), { headers: { Origin: app }, signal: AbortSignal.timeout(5000) });
    assert.equal(gotACAO.headers.get('access-control-allow-origin'), app);
    await gotACAO.body?.cancel();
  });

  test('with credentials: withCredentials sends the cookie token, Ferry allows credentials; without them the stream is refused', T, async () => {
    const { n, ng, app } = await setup('ferry-xo-cookie', { 'token-key': TOKEN_KEY });
    const ch = channel('xo-cookie');
    const cookies = [{ name: 'ferry_token', value: jwt('dash-user', 3600), url: ng.url2, sameSite: 'Lax' }];
    const s = await openStream(`${app}/healthz`, streamURL(ng.url2, [ch]), [ch], { withCredentials: true, cookies, name: 'xo-cookie' });
    await until(s, (x) => x.opens.length === 1, 'the credentialed stream to open');
    for (let i = 1; i <= 3; i++) await publish(n, ch, { seq: i });
    const r = await until(s, (x) => of(x, ch).length === 3, 'three messages');
    assert.deepEqual(seqs(r, ch), [1, 2, 3]);
    assert.deepEqual(r.errors, []);
    // The control: the same page and cookie without withCredentials sends no cookie, is
    // refused (401), and an EventSource refused so closes for good.
    const anon = await openStream(`${app}/healthz`, streamURL(ng.url2, [ch]), [ch], { cookies, name: 'xo-cookie-without' });
    const ra = await until(anon, (x) => x.state === 2 && x.errors.length > 0, 'the uncredentialed stream to close');
    assert.equal(ra.opens.length, 0);
    // What the browser relied on: Ferry names the page's origin and allows credentials.
    const direct = await fetch(streamURL(ng.url2, [ch]), {
      headers: { Origin: app, Cookie: `ferry_token=${cookies[0].value}` }, signal: AbortSignal.timeout(5000),
    });
    assert.equal(direct.status, 200);
    assert.equal(direct.headers.get('access-control-allow-origin'), app);
    assert.equal(direct.headers.get('access-control-allow-credentials'), 'true');
    await direct.body?.cancel();
    const refused = ng.accessEntries().filter((e) => e.request.includes('/ferry/events') && e.status === 401);
    assert.ok(refused.length >= 1, 'refused 401 without the cookie');
  });
});

describe('bare EventSource and a lapsed identity', () => {
  test('a token that expires ends the stream with a close event (4006), and the browser stays closed', T, async (t) => {
    const n = await startNode('ferry-expiry', { 'token-key': TOKEN_KEY, heartbeat: '1s' });
    const ch = channel('exp');
    const LIFE = 4; // seconds of the token
    const token = jwt('dash-user', LIFE);
    const issued = Date.now();
    const s = await openStream(`${n.url}/healthz`, streamURL(n.url, [ch], `&token=${token}`), [ch], { name: 'expiry' });
    await until(s, (x) => x.opens.length === 1, 'the stream to open');
    await publish(n, ch, { seq: 1 });
    await until(s, (x) => of(x, ch).length === 1, 'a message while the token is valid');
    // Within a heartbeat or so of the expiry: the close event, then the reconnect the
    // browser makes with the same lapsed token is refused (401) and it gives up.
    const r = await until(s, (x) => of(x, 'close').length === 1 && x.state === 2, 'the close event and the EventSource closed', LIFE * 1000 + 15000);
    const closeEv = of(r, 'close')[0];
    t.diagnostic(`close event ${closeEv.t - issued} ms after a ${LIFE} s token was issued: ${JSON.stringify(closeEv.data)}`);
    assert.equal(closeEv.data.code, 4006, `the close event says why: ${JSON.stringify(closeEv.data)}`);
    assert.ok(closeEv.t >= issued + (LIFE - 1) * 1000, `closed ${closeEv.t - issued} ms after the token was issued, before it expired`);
    assert.ok(closeEv.t <= issued + (LIFE + 3) * 1000, `closed ${closeEv.t - issued} ms after the token was issued: not within a heartbeat or so of its expiry`);
    assert.deepEqual(seqs(r, ch), [1]);
    assert.equal(r.opens.length, 1, 'never reopened with the lapsed token');
    // Published after the end: nothing arrives.
    await publish(n, ch, { seq: 2 });
    const direct = await fetch(streamURL(n.url, [ch], `&token=${token}`), { signal: AbortSignal.timeout(5000) });
    assert.equal(direct.status, 401, 'the lapsed token is refused');
    await direct.body?.cancel();
    assert.deepEqual(seqs(await s.rec(), ch), [1], 'nothing after the close');
  });
});
