// The common shape of a browser scenario: servers (and a proxy) up, a publisher running, a
// page on the real client; then the scenario's own steps; then publishing stops, the page
// must catch up on everything owed, and the counts are checked and recorded.
import { FerryNode } from './ferry.js';
import { Nginx } from './nginx.js';
import { Publisher } from './publisher.js';
import { launchBrowser, openHarness } from './browser.js';
import { analyze, analyzeUpstream, fmtPath, fmtUpstream, transportPath, upstreamProblems } from './check.js';
import { waitFor } from './util.js';
import fs from 'node:fs';
import path from 'node:path';

export const CHANNELS = ['room:a', 'room:b'];

/** Starts one Ferry node; stopped by ctx at the end. */
export async function node(ctx, { flags = {}, name = 'ferry', port } = {}) {
  const n = new FerryNode({ dir: ctx.dir, name, flags, port });
  ctx.defer(() => n.stop({ timeout: 10000 }), `stop ${name}`);
  await n.start();
  ctx.note(`${name} ${n.url} (log ${n.logFile})`);
  return n;
}

/**
 * Starts nginx with `template` in front of `upstreams` (FerryNodes); stopped by ctx. `ports`
 * ({port, port2}) fixes its listening ports, for a server that must know them beforehand.
 */
export async function proxy(ctx, template, upstreams, name = 'nginx', ports = {}) {
  const ng = new Nginx({ dir: ctx.dir, template, upstreams: upstreams.map((u) => u.addr), name, ...ports });
  ctx.defer(() => ng.stop(), `stop ${name}`);
  await ng.start();
  ctx.note(`${name} (${template}) ${ng.url} (logs ${ng.prefix})`);
  return ng;
}

/** Starts the publisher against `target` (a FerryNode or url); stopped by ctx. */
export function publisher(ctx, target, opts = {}) {
  const url = typeof target === 'string' ? target : target.url;
  const p = new Publisher({ url, channels: CHANNELS, rate: 20, ...opts });
  ctx.defer(() => p.stop().catch(() => {}), 'stop publisher');
  return p.start();
}

/**
 * A browser with the harness page at `origin`; closed by ctx. `base` is Ferry's URL when it
 * is not `origin`/ferry (another origin); `credentials` makes the client's requests carry
 * cookies cross-origin, and `cookies` are set in the browser first.
 */
export async function page(ctx, origin, { options = {}, upstream = 200, channels = CHANNELS, base, credentials, cookies } = {}) {
  const browser = await launchBrowser();
  ctx.defer(() => browser.close(), 'close chromium');
  const h = await openHarness(browser, {
    origin, channels, upstream, options: { proofTimeout: 3000, ...options },
    logFile: path.join(ctx.dir, 'page.log'), base, credentials, cookies,
  });
  ctx.defer(() => h.close(), 'close page');
  ctx.note(`page ${origin} (log ${path.join(ctx.dir, 'page.log')})`);
  return h;
}

/**
 * Stops publishing and upstream sends, waits (bounded) until the page has everything it is
 * owed and every send is settled, then checks and records the counts. Returns the analysis.
 */
export async function finish(ctx, pub, h, { upstream = true, catchUp = 20000 } = {}) {
  await pub.stop();
  await h.stopUpstream();
  let snap = await h.snapshot();
  try {
    await waitFor(async () => {
      snap = await h.snapshot();
      const up = analyzeUpstream(snap);
      return analyze(pub, snap).missing === 0 && !up.unsettled.length && (!upstream || up.missing === 0);
    }, { timeout: catchUp, interval: 250, what: 'the page to receive everything published and settle its sends' });
  } catch (e) {
    ctx.fail(e.message);
  }
  snap = await h.snapshot();
  // Everything recorded, for diagnosis: what the page saw and what the server accepted.
  fs.writeFileSync(path.join(ctx.dir, 'snapshot.json'), JSON.stringify({
    snap,
    accepted: Object.fromEntries([...pub.accepted].map(([ch, m]) => [ch, Object.fromEntries(m)])),
    unknown: pub.unknown,
  }));
  const a = analyze(pub, snap);
  const up = analyzeUpstream(snap);
  const steps = transportPath(snap);
  Object.assign(ctx.result, {
    transport: fmtPath(steps),
    firstMsg: a.firstMsgMs,
    sent: a.sent, expected: a.expected, received: a.received,
    dup: a.dup, missing: a.missing, ooo: a.ooo, offsetErrs: a.offsetErrs + a.mismatched,
    resets: a.resets,
    up: fmtUpstream(up),
  });
  ctx.snap = snap;
  ctx.analysis = a;
  ctx.upstream = up;
  ctx.steps = steps;
  for (const p of a.problems) ctx.fail(p);
  if (a.expected === 0) ctx.fail('nothing was owed to the page: the publisher or the subscription never worked');
  if (pub.unknown.length) ctx.note(`${pub.unknown.length} publishes with unknown outcome, e.g. ${pub.unknown[0].error}`);
  if (upstream) {
    if (up.sent === 0) ctx.fail('the page sent nothing upstream (it never connected with a session?)');
    for (const p of upstreamProblems(up)) ctx.fail(p);
    if (up.failed) ctx.fail(`upstream: ${up.failed} sends failed, e.g. ${JSON.stringify(snap.up.failed[0])}`);
  }
  for (const e of snap.subErrors) ctx.fail(`subscription error on ${e.ch}: ${e.code} ${e.reason}`);
  return a;
}

/**
 * Runs a scenario's steps; an error there is recorded as a failure and the scenario still
 * finishes (stops publishing, collects the page's counts), so that a failed scenario still
 * says what it saw.
 */
export async function steps(ctx, fn) {
  try {
    await fn();
    return true;
  } catch (e) {
    ctx.fail(e.message);
    return false;
  }
}

/** Fails unless the page's transport path visits exactly `want` (e.g. ['websocket']). */
export function expectPath(ctx, want) {
  const got = ctx.steps.map((s) => s.tr);
  if (got.join('→') !== want.join('→')) ctx.fail(`transport path ${got.join('→') || '(never connected)'}, want ${want.join('→')}`);
}

/** Number of times the page left the connected state (reconnects). */
export function disconnects(snap) {
  const i = snap.states.findIndex((s) => s.state === 'connected');
  return i < 0 ? 0 : snap.states.slice(i + 1).filter((s) => s.state !== 'connected').length;
}
