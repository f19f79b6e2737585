// One connection per browser (issue 19): tabs of one origin share one session with
// `new Ferry(url, { share: true })` from the sharing entry, which the harness loads from
// /ferry/share.js when its options ask for `share` (the server must serve dist/share.js).
//   share:sse        WebSocket blocked by nginx (no-upgrade): eight tabs, one SSE connection.
//   share:longpoll   nginx buffers streams (buffer-gzip): eight tabs, one long-poll.
// In both: the server's ferry_connections gauge shows one live connection; a ninth tab joins
// without a new one; a fetch in every tab completes; then the leading tab is closed, another
// one's renderer crashed (CDP Page.crash), a third one leaves through `pagehide` (bfcache):
// each time another tab leads and every tab still gets every message once, in order, and
// every publish made through the leader (before, during, after) lands once.
import { CHANNELS, node, proxy, publisher } from '../lib/flow.js';
import { launchBrowser, openHarness } from '../lib/browser.js';
import { analyze } from '../lib/check.js';
import { waitFor, withTimeout } from '../lib/util.js';
import path from 'node:path';

const TABS = 8;

/** The sum of a metric's samples in the server's /metrics (Prometheus text). */
export async function metric(n, name) {
  const text = await (await fetch(`${n.url}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) sum += Number(line.split(' ').pop());
  return sum;
}

/** Opens k tabs of the harness in `context`. */
export async function openTabs(ctx, browser, context, origin, k, options = {}, first = 0) {
  const hs = [];
  for (let i = 0; i < k; i++) {
    const h = await openHarness(browser, {
      origin, context, channels: CHANNELS, upstream: 0, options: { share: true, ...options },
      logFile: path.join(ctx.dir, `tab${first + i}.log`),
    });
    h.id = first + i;
    ctx.defer(() => h.close(), `close tab ${h.id}`);
    hs.push(h);
  }
  return hs;
}

/** Waits until exactly one of the tabs leads and all are connected; returns it. */
export async function leader(hs, want, timeout = 15000) {
  let lead = null;
  await waitFor(async () => {
    const st = await Promise.all(hs.map((h) => h.state()));
    const leaders = hs.filter((_, i) => st[i].shared === 'leader');
    lead = leaders[0];
    return leaders.length === 1 && st.every((s) => s.state === 'connected' && s.transport === want);
  }, { timeout, interval: 20, what: `one leading tab and all ${hs.length} connected on ${want}` });
  return lead;
}

/** In every tab: follow room:up, and publish {tab, k} to it every 250 ms through the shared session. */
async function startPublishing(hs) {
  await Promise.all(hs.map((h) => h.page.evaluate((tab) => {
    window.up = { got: [], acked: [], failed: [] };
    ferry.subscribe('room:up', (d) => window.up.got.push(`${d.tab}:${d.k}`));
    let k = 0;
    window.up.timer = setInterval(() => {
      const d = { tab, k: ++k };
      ferry.publish('room:up', d).then((p) => window.up.acked.push([`${tab}:${d.k}`, p && p.offset]), (e) => window.up.failed.push(String(e)));
    }, 250);
  }, h.id)));
}

function shareCase(name, template, want) {
  return {
    name,
    weight: 40,
    timeout: 240000,
    async run(ctx) {
      const n = await node(ctx);
      const ng = await proxy(ctx, template, [n]);
      const pub = publisher(ctx, n);
      const browser = await launchBrowser();
      ctx.defer(() => browser.close(), 'close chromium');
      const context = await browser.newContext();
      let hs = await openTabs(ctx, browser, context, ng.url, TABS);
      let lead = await leader(hs, want);
      await waitFor(async () => (await metric(n, 'ferry_connections')) === 1, { timeout: 10000, what: 'one live connection' });
      ctx.result.conns8 = await metric(n, 'ferry_connections');

      // A ninth tab joins the session: still one connection.
      hs.push(...(await openTabs(ctx, browser, context, ng.url, 1, {}, TABS)));
      lead = await leader(hs, want);
      ctx.result.conns9 = await metric(n, 'ferry_connections');
      ctx.check(ctx.result.conns9 === 1, `nine tabs: ${ctx.result.conns9} connections, want 1`);
      // Ordinary page requests still go: the browser's six connections per host are not all held.
      const fetched = await Promise.all(hs.map((h) => withTimeout(h.page.evaluate(() => fetch(`/healthz?${Math.random()}`).then((r) => r.status)), 5000, `fetch in tab ${h.id}`).catch((e) => String(e))));
      ctx.check(fetched.every((s) => s === 200), `a fetch in every tab: ${fetched}`);

      await startPublishing(hs);
      const takeovers = [];
      const gone = [];
      const sent = new Map(); // tab → what it saw acked before it went
      const keepAcks = async (h) => sent.set(h.id, await h.page.evaluate(() => window.up.acked.map((a) => a[0])));
      const takeover = async (what, fn) => {
        await new Promise((r) => setTimeout(r, 1500)); // mid-stream: messages flow meanwhile
        const old = lead;
        await keepAcks(old);
        const t0 = Date.now();
        await fn(old);
        const rest = hs.filter((h) => !gone.includes(h));
        lead = await leader(rest, want);
        takeovers.push(`${what} ${Date.now() - t0} ms`);
        ctx.check(lead !== old, `${what}: the same tab leads`);
      };
      await takeover('close', async (h) => {
        gone.push(h);
        await h.page.close();
      });
      await takeover('crash', async (h) => {
        gone.push(h);
        const cdp = await context.newCDPSession(h.page);
        cdp.send('Page.crash').catch(() => {}); // never answers: the renderer is gone
      });
      await takeover('pagehide', async (h) => {
        // Into the back-forward cache: the tab lets go of the lead, and comes back as a follower.
        await h.page.evaluate(() => window.dispatchEvent(new PageTransitionEvent('pagehide', { persisted: true })));
        await waitFor(async () => (await h.state()).shared === 'follower', { timeout: 5000, what: 'the hidden tab to let go' });
        await h.page.evaluate(() => window.dispatchEvent(new PageTransitionEvent('pageshow', { persisted: true })));
      });
      ctx.result.takeovers = takeovers.join(', ');
      await new Promise((r) => setTimeout(r, 1500));
      const live = hs.filter((h) => !gone.includes(h));
      await Promise.all(live.map((h) => h.page.evaluate(() => clearInterval(window.up.timer))));
      await pub.stop();

      // Every tab gets everything owed, once, in order.
      const problems = [];
      const recv = [];
      for (const h of live) {
        let a;
        try {
          await waitFor(async () => (a = analyze(pub, await h.snapshot())).missing === 0, { timeout: 20000, interval: 250, what: `tab ${h.id} to catch up` });
        } catch (e) { problems.push(e.message); }
        a = analyze(pub, await h.snapshot());
        recv.push(`${a.received}/${a.expected}`);
        for (const p of a.problems) problems.push(`tab ${h.id}: ${p}`);
        if (!a.expected) problems.push(`tab ${h.id}: nothing owed`);
      }
      // Every publish acked in any tab landed once in every live tab; nothing landed twice.
      for (const h of live) await keepAcks(h);
      await waitFor(async () => {
        const ups = await Promise.all(live.map((h) => h.page.evaluate(() => window.up)));
        return ups.every((u) => [...sent.values()].flat().every((k) => u.got.includes(k)) && u.failed.length === 0);
      }, { timeout: 20000, interval: 250, what: 'every acked publish in every tab' }).catch((e) => problems.push(e.message));
      const ups = await Promise.all(live.map((h) => h.page.evaluate(() => window.up)));
      for (const [i, u] of ups.entries()) {
        const dups = u.got.filter((k, j) => u.got.indexOf(k) !== j);
        if (dups.length) problems.push(`tab ${live[i].id}: publishes seen twice: ${dups.slice(0, 5)}`);
        if (u.failed.length) problems.push(`tab ${live[i].id}: publishes failed: ${u.failed.slice(0, 3)}`);
      }
      ctx.result.published = [...sent.values()].flat().length;
      ctx.result.sent = pub.count;
      ctx.result.recv = recv.join(' ');
      for (const p of problems.slice(0, 20)) ctx.fail(p);
      await waitFor(async () => (await metric(n, 'ferry_connections')) === 1, { timeout: 15000, what: 'one live connection after the takeovers' })
        .catch((e) => ctx.fail(`${e.message}: ${e.last ?? ''}`));
      ctx.result.connsEnd = await metric(n, 'ferry_connections');
    },
  };
}

export const cases = [
  shareCase('share:sse', 'no-upgrade', 'sse'),
  shareCase('share:longpoll', 'buffer-gzip', 'longpoll'),
];

/** An HS256 JWT for `sub`, signed with key (what cmd/ferry's --token-key verifies). */
async function jwt(key, sub) {
  const { createHmac } = await import('node:crypto');
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  return `${body}.${createHmac('sha256', key).update(body).digest('base64url')}`;
}

async function apiPublish(n, channel, data) {
  const r = await fetch(`${n.url}/ferry/api/publish`, {
    method: 'POST', headers: { Authorization: 'Bearer e2e-api-key', 'Content-Type': 'application/json' }, body: JSON.stringify({ channel, data }),
  });
  if (!r.ok) throw new Error(`publish to ${channel}: HTTP ${r.status} ${await r.text()}`);
}

// share:users: two users, each with two tabs in a browser context of their own. Tabs of one
// user share a session; the users never share, and never see each other's $user: or
// $session: messages.
cases.push({
  name: 'share:users',
  weight: 20,
  timeout: 120000,
  async run(ctx) {
    const key = 'e2e-token-key-0123456789abcdef';
    const n = await node(ctx, { flags: { 'token-key': key } });
    const browser = await launchBrowser();
    ctx.defer(() => browser.close(), 'close chromium');
    const users = {};
    for (const who of ['alice', 'bob']) {
      const context = await browser.newContext();
      const token = await jwt(key, who);
      const hs = [];
      for (let i = 0; i < 2; i++) {
        const h = await openHarness(browser, {
          origin: n.url, context, channels: [`$user:${who}`], upstream: 0, options: { share: true, token },
          logFile: path.join(ctx.dir, `${who}${i}.log`),
        });
        ctx.defer(() => h.close(), `close ${who} tab ${i}`);
        hs.push(h);
      }
      await leader(hs, 'websocket');
      const sids = await Promise.all(hs.map((h) => h.page.evaluate(() => {
        window.sess = [];
        ferry.subscribe(`$session:${ferry.sid}`, (d) => window.sess.push(d.who));
        return ferry.sid;
      })));
      ctx.check(sids[0] === sids[1], `${who}'s tabs share a session: ${sids}`);
      users[who] = { hs, sid: sids[0] };
    }
    ctx.check(users.alice.sid !== users.bob.sid, 'the users share nothing');
    ctx.result.conns = await metric(n, 'ferry_connections');
    ctx.check(ctx.result.conns === 2, `two users, ${ctx.result.conns} connections, want 2`);
    // Each tab's $session: subscription is confirmed before anything is published to it.
    await waitFor(async () => (await Promise.all(Object.values(users).flatMap((u) => u.hs).map((h) => h.page.evaluate(() => ferry.subscription(`$session:${ferry.sid}`)?.state)))).every((s) => s === 'subscribed'), { timeout: 10000, what: 'the $session: subscriptions' });
    for (let seq = 1; seq <= 3; seq++) {
      for (const [who, u] of Object.entries(users)) {
        await apiPublish(n, `$user:${who}`, { seq, who });
        await apiPublish(n, `$session:${u.sid}`, { seq, who });
      }
    }
    for (const [who, u] of Object.entries(users)) {
      for (const h of u.hs) {
        const got = async () => h.page.evaluate(() => ({ user: e2e.msgs.map((m) => m.seq), sess: window.sess }));
        await waitFor(async () => { const g = await got(); return g.user.length >= 3 && g.sess.length >= 3; }, { timeout: 10000, what: `${who}'s messages` })
          .catch((e) => ctx.fail(e.message));
        const g = await got();
        ctx.check(JSON.stringify(g.user) === '[1,2,3]', `${who}: $user: messages ${JSON.stringify(g.user)}`);
        ctx.check(JSON.stringify(g.sess) === JSON.stringify([who, who, who]), `${who}: $session: messages ${JSON.stringify(g.sess)}`);
      }
    }
  },
});

// share:measure: what sharing saves the server, and how long a takeover takes. Eight tabs
// without sharing, then with (fresh server each time): live connections, the server's
// resident and heap memory, and (SSE through nginx) how many tabs get connected at all; then
// 20 takeovers: the leading tab is closed, the time until another tab leads with every tab
// connected again is taken, and a new tab keeps the count at eight.
cases.push({
  name: 'share:measure',
  weight: 40,
  timeout: 300000,
  async run(ctx) {
    const browser = await launchBrowser();
    ctx.defer(() => browser.close(), 'close chromium');
    const sample = async (n) => ({
      conns: await metric(n, 'ferry_connections'),
      rssMB: +((await metric(n, 'process_resident_memory_bytes')) / 2 ** 20).toFixed(1),
      heapMB: +((await metric(n, 'go_memstats_heap_inuse_bytes')) / 2 ** 20).toFixed(1),
    });
    for (const share of [false, true]) {
      const n = await node(ctx, { name: share ? 'ferry-shared' : 'ferry-unshared' });
      const ng = await proxy(ctx, 'no-upgrade', [n], share ? 'nginx-shared' : 'nginx-unshared');
      const context = await browser.newContext();
      const hs = [];
      const label = share ? 'shared' : 'unshared';
      // Without sharing, SSE through an HTTP/1.1 proxy: six streams take every connection the
      // browser allows per host, and a seventh tab can't even load its page.
      let unloaded = 0;
      for (let i = 0; i < TABS; i++) {
        try {
          hs.push(await openHarness(browser, {
            origin: ng.url, context, channels: CHANNELS, upstream: 0, options: { share },
            logFile: path.join(ctx.dir, `${label}${i}.log`),
          }));
        } catch { unloaded++; }
      }
      const connected = async () => (await Promise.all(hs.map((h) => h.state()))).filter((s) => s.state === 'connected').length;
      await waitFor(async () => (await connected()) === TABS, { timeout: 10000, what: 'all tabs connected' }).catch(() => {});
      ctx.result[`${label}Sse`] = `${await connected()}/${TABS} connected, ${unloaded} could not load`;
      if (share) ctx.check(unloaded === 0 && (await connected()) === TABS, `shared over SSE: ${ctx.result[`${label}Sse`]}`);
      await Promise.all(hs.map((h) => h.close()));
      await context.close();
      // The same over WebSocket, straight to the server (no browser limit on WebSockets).
      const context2 = await browser.newContext();
      const ws = [];
      for (let i = 0; i < TABS; i++) {
        ws.push(await openHarness(browser, {
          origin: n.url, context: context2, channels: CHANNELS, upstream: 0, options: { share },
          logFile: path.join(ctx.dir, `${label}-ws${i}.log`),
        }));
      }
      await waitFor(async () => (await Promise.all(ws.map((h) => h.state()))).every((s) => s.state === 'connected'), { timeout: 15000, what: 'all tabs connected' });
      await waitFor(async () => (await metric(n, 'ferry_connections')) === (share ? 1 : TABS), { timeout: 10000, what: 'the connections to settle' })
        .catch((e) => ctx.fail(e.message));
      ctx.result[label] = JSON.stringify(await sample(n));
      await Promise.all(ws.map((h) => h.close()));
      await context2.close();
    }

    // 20 takeovers over SSE (nginx blocks WebSocket).
    const n = await node(ctx, { name: 'ferry-takeover' });
    const ng = await proxy(ctx, 'no-upgrade', [n], 'nginx-takeover');
    const context = await browser.newContext();
    let hs = await openTabs(ctx, browser, context, ng.url, TABS);
    let lead = await leader(hs, 'sse');
    const times = [];
    for (let i = 0; i < 20; i++) {
      const t0 = Date.now();
      await lead.page.close();
      hs = hs.filter((h) => h !== lead);
      const old = lead;
      lead = await leader(hs, 'sse');
      times.push(Date.now() - t0);
      ctx.check(lead !== old, 'the closed tab still leads');
      hs.push(...(await openTabs(ctx, browser, context, ng.url, 1, {}, TABS + i)));
    }
    times.sort((a, b) => a - b);
    ctx.result.takeoverP50 = times[Math.floor(times.length / 2)];
    ctx.result.takeoverMax = times.at(-1);
    ctx.result.takeovers = times.join(' ');
    ctx.check(times.at(-1) < 5000, `a takeover took ${times.at(-1)} ms`);
  },
});
