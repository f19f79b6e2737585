// idle-cut:<transport>: behind a proxy that cuts any request idle for 5 s (idle-cut.conf), a
// session on each transport stays up for a minute without a single cut and without loss. The
// server runs with --heartbeat 2s --poll-hold 3s, so that heartbeats and poll holds stay under
// the cut; the publisher goes quiet for 9 s at a time, longer than the cut, so only the
// heartbeats and holds keep the path busy. proxy-facts shows that this proxy does cut a quiet
// stream, WebSocket or poll at 5 s.
import { disconnects, expectPath, finish, node, page, proxy, publisher, steps } from '../lib/flow.js';
import { bursts } from '../lib/publisher.js';
import { delay } from '../lib/util.js';

const MINUTE = 60000;

function idleCase(tr) {
  return {
    name: `idle-cut:${tr}`,
    weight: 100,
    timeout: 150000,
    async run(ctx) {
      const n = await node(ctx, { flags: { heartbeat: '2s', 'poll-hold': '3s' } });
      const ng = await proxy(ctx, 'idle-cut', [n]);
      const h = await page(ctx, ng.url, { options: { transports: [tr] } });
      const pub = publisher(ctx, n, { active: bursts(6000, 9000) });
      const ok = await steps(ctx, async () => {
        ctx.result.land = await h.waitForTransport(tr, { timeout: 8000 });
        await delay(MINUTE); // the session must simply stay up: nothing to wait for but time
      });
      await finish(ctx, pub, h);
      if (ok) expectPath(ctx, [tr]);
      const d = disconnects(ctx.snap);
      ctx.check(d === 0, `the session dropped ${d} times in a minute (states: ${ctx.snap.states.map((s) => s.state + (s.code ? `(${s.code} ${s.reason})` : '')).join(', ')})`);
      const cuts = ng.errors(/upstream timed out/);
      ctx.check(cuts.length === 0, `nginx cut ${cuts.length} idle requests, e.g. ${cuts[0]}`);
      const gw = ng.accessEntries().filter((e) => e.status === 504);
      ctx.check(gw.length === 0, `nginx answered 504 ${gw.length} times`);
      ctx.result.extra = `cuts ${cuts.length}`;
    },
  };
}

export const cases = ['websocket', 'sse', 'longpoll'].map(idleCase);
