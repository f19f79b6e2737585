// Issue 20: one message that a browser refuses on a WebSocket (a text frame that isn't
// UTF-8) must not keep the client from everything after it. A proxy we control
// (lib/stallproxy.js, `corrupt`) spoils the one frame that carries room:a's seq 40, each time
// it goes out: live, and at every replay from history, as the server would re-serve a bad
// message. Chromium fails the WebSocket each time. The client must report it (an `error`
// event), carry on over SSE after at most one backoff, miss nothing, and go back to the
// WebSocket with its upgrade probe once its position is past the message.
//
//   poison:websocket   checks the path websocket → sse → websocket, every message exactly
//                      once, and that the client was never without a transport for longer
//                      than one backoff plus one attempt (backoff.max + proofTimeout).
import { expectPath, finish, node, page, publisher, steps } from '../lib/flow.js';
import { StallProxy } from '../lib/stallproxy.js';
import { delay, waitFor } from '../lib/util.js';

const BACKOFF = { min: 250, max: 2000 };
const PROOF = 3000;
const POISON = '{"seq":40,"ch":"room:a",'; // how the publisher's payload for it begins

/** The longest time the page spent without a transport after it first connected, in ms. */
function longestGap(snap) {
  let worst = 0;
  let since = null;
  let connected = false;
  for (const x of [...snap.timeline, { t: snap.now, state: 'end', transport: 'end' }]) {
    if (x.transport && x.state !== 'connecting') {
      if (since !== null) worst = Math.max(worst, x.t - since);
      since = null;
      connected = true;
    } else if (connected && since === null) since = x.t;
  }
  return worst;
}

export const cases = [{
  name: 'poison:websocket',
  weight: 40,
  timeout: 120000,
  async run(ctx) {
    const n = await node(ctx, { flags: { heartbeat: '2s', 'poll-hold': '5s' } });
    const sp = new StallProxy({ upstream: n.addr });
    ctx.defer(() => sp.stop(), 'stop proxy');
    await sp.start();
    sp.corrupt = POISON;
    ctx.note(`corrupting proxy ${sp.url}`);
    const h = await page(ctx, sp.url, {
      options: { backoff: BACKOFF, proofTimeout: PROOF, upgradeProbe: { min: 3000, max: 8000 } },
    });
    ctx.pub = publisher(ctx, n);
    const ok = await steps(ctx, async () => {
      await h.waitForTransport('websocket', { timeout: 8000 });
      await waitFor(() => sp.corrupted > 0, { timeout: 15000, what: 'the poisoned message to go out' });
      await h.waitForTransport('sse', { timeout: 10000 });
      await h.waitForTransport('websocket', { timeout: 20000 });
      await delay(3000);
    });
    await finish(ctx, ctx.pub, h);
    if (ok) expectPath(ctx, ['websocket', 'sse', 'websocket']);
    const snap = ctx.snap;
    const gap = longestGap(snap);
    const benched = snap.errors.filter((e) => /websocket failed/.test(e.message));
    ctx.check(sp.corrupted >= 2, `the poisoned frame went out ${sp.corrupted} time(s): the replay never hit it`);
    ctx.check(benched.length >= 1, `no error event named the failing WebSocket: ${JSON.stringify(snap.errors)}`);
    ctx.check(gap <= BACKOFF.max + PROOF, `without a transport for ${gap} ms, more than one backoff and attempt (${BACKOFF.max + PROOF} ms)`);
    ctx.result.extra = `frames spoiled ${sp.corrupted}, longest without transport ${gap} ms, errors ${snap.errors.length}`;
  },
}];
