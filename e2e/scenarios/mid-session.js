// The path starts buffering in the middle of a session, then clears again. The client must
// move down (to long-polling) without losing or repeating a message, and move back up when
// the path clears (its upgrade probe, set here to 2-8 s so the test stays short).
//
//   mid-nginx:<start>   nginx (plain.conf) is reloaded with buffer-gzip.conf (SIGHUP) under
//                       the running client, later back to plain.conf. Old nginx workers drop
//                       live connections 1 s after a reload (worker_shutdown_timeout), and
//                       every new stream is buffered: the client must re-prove its way down.
//   mid-stall:<start>   a proxy we control (lib/stallproxy.js) starts holding every byte of
//                       the live stream, without closing it: only the heartbeats (their
//                       absence) can tell. The client must notice and move down by itself.
//   mid-clump:<start>   the same proxy lets the live stream through in lumps every 5 s: the
//                       stream never goes silent long enough to look late, only the clumped
//                       arrival of heartbeats gives it away. With the publisher at 20 msg/s.
//   mid-clump-sparse:<start>  the same with one message every 4 s and no upstream sends:
//                       tells a detector that fails from heartbeats that are never sent.
import { expectPath, finish, node, page, proxy, publisher, steps } from '../lib/flow.js';
import { StallProxy } from '../lib/stallproxy.js';
import { delay } from '../lib/util.js';

const FLAGS = { heartbeat: '2s', 'poll-hold': '5s' };
const PROBE = { min: 2000, max: 8000 };
const RUN = 5000;

function optionsFor(start) {
  return {
    transports: start === 'websocket' ? ['websocket', 'sse', 'longpoll'] : ['sse', 'longpoll'],
    upgradeProbe: PROBE,
  };
}

/** The path turns bad, the client lands on long-polling, the path clears, it goes back up. */
async function downAndUp(ctx, h, start, { spoil, clear, downWithin = 20000, upWithin = 25000, upstream = true }) {
  let down, up;
  const ok = await steps(ctx, async () => {
    ctx.result.land = await h.waitForTransport(start, { timeout: 8000 });
    await delay(RUN);
    let t0 = Date.now();
    await spoil();
    await h.waitForTransport('longpoll', { timeout: downWithin });
    down = Date.now() - t0;
    await delay(RUN); // on long-polling behind the bad path, with upgrade probes failing
    t0 = Date.now();
    await clear();
    await h.waitForTransport(start, { timeout: upWithin });
    up = Date.now() - t0;
    await delay(RUN);
  });
  await clear(); // whatever happened, the path is clear for the page to catch up
  await finish(ctx, ctx.pub, h, { upstream });
  if (ok) expectPath(ctx, [start, 'longpoll', start]);
  ctx.result.extra = `down ${down != null ? (down / 1000).toFixed(1) + 's' : 'never'}, up ${up != null ? (up / 1000).toFixed(1) + 's' : 'never'}`;
}

function nginxCase(start) {
  return {
    name: `mid-nginx:${start}`,
    weight: 60,
    timeout: 150000,
    async run(ctx) {
      const n = await node(ctx, { flags: FLAGS });
      const ng = await proxy(ctx, 'plain', [n]);
      const h = await page(ctx, ng.url, { options: optionsFor(start) });
      ctx.pub = publisher(ctx, n);
      await downAndUp(ctx, h, start, {
        spoil: () => ng.reload('buffer-gzip'),
        clear: () => ng.reload('plain'),
      });
    },
  };
}

function stallCase(kind, start, { sparse = false } = {}) {
  return {
    name: `mid-${kind}${sparse ? '-sparse' : ''}:${start}`,
    weight: 60,
    timeout: 150000,
    async run(ctx) {
      const n = await node(ctx, { flags: FLAGS });
      const sp = new StallProxy({ upstream: n.addr, clumpMs: 5000 });
      ctx.defer(() => sp.stop(), 'stop stall proxy');
      await sp.start();
      ctx.note(`stall proxy ${sp.url}`);
      // sparse: one message every 4 s and no upstream sends (whose acks are traffic too), so
      // the stream is quiet between heartbeats.
      const h = await page(ctx, sp.url, { options: optionsFor(start), upstream: sparse ? 0 : 200 });
      ctx.pub = publisher(ctx, n, sparse ? { rate: 0.25 } : {});
      await downAndUp(ctx, h, start, {
        spoil: () => sp.setMode(kind === 'stall' ? 'buffer' : 'clump'),
        clear: () => sp.setMode('pass'),
        // Lumps every 5 s of 2 s heartbeats: three pings in one lump take up to 10 s to line
        // up, then the SSE proof times out (3 s) on the way down.
        downWithin: kind === 'clump' ? 25000 : 20000,
        upstream: !sparse,
      });
    },
  };
}

export const cases = [
  nginxCase('websocket'),
  nginxCase('sse'),
  stallCase('stall', 'websocket'),
  stallCase('stall', 'sse'),
  stallCase('clump', 'websocket'),
  stallCase('clump', 'websocket', { sparse: true }),
];
