// restart:<transport>: the server restarts (SIGTERM, graceful drain, start again on the same
// address) under a running client and a running publisher. The client must resume with
// nothing lost and nothing repeated: every message the publish API accepted before, during
// and after the restart arrives once, in order, in the same epoch (no reset).
//
// The node runs with the defaults a user gets from `go run ./cmd/ferry`: no --secret and no
// --state-file. Its data directory (--data-dir, here the node's own under the run directory)
// keeps the generated secret and the in-memory broker's state across the restart; without
// it the scenario fails, on purpose: a restart would cost every client a reset.
import { requireFlags } from '../lib/ferry.js';
import { expectPath, finish, node, page, publisher, steps } from '../lib/flow.js';
import { delay, waitFor } from '../lib/util.js';

const RUN = 6000; // publishing before and after the restart
const DOWN = 1500; // how long the server stays down

function restartCase(tr) {
  return {
    name: `restart:${tr}`,
    weight: 50,
    timeout: 120000,
    async run(ctx) {
      await requireFlags('data-dir');
      const n = await node(ctx, { flags: { secret: undefined, 'drain-timeout': '3s' } });
      const h = await page(ctx, n.url, { options: { transports: [tr] } });
      const pub = publisher(ctx, n);
      let down, back;
      const ok = await steps(ctx, async () => {
        ctx.result.land = await h.waitForTransport(tr, { timeout: 8000 });
        await delay(RUN);

        const before = await h.count();
        const t0 = Date.now();
        const st = await n.stop();
        // Down for a moment, as a real restart is: the client's reconnects fail meanwhile and
        // the publisher's requests are refused (and retried).
        await delay(DOWN);
        await n.start();
        down = Date.now() - t0;
        ctx.check(st && st.code === 0, `the server did not stop cleanly on SIGTERM: ${JSON.stringify(st)}`);
        // Back on the transport, and messages flowing again.
        await h.waitForTransport(tr, { timeout: 30000 });
        back = Date.now() - t0;
        await waitFor(async () => (await h.count()) > before + 20, {
          timeout: 20000, what: 'messages to flow again after the restart',
        });
        await delay(RUN);
      });
      if (!n.running()) await n.start().catch((e) => ctx.fail(`restarting for the final count: ${e.message}`));
      await finish(ctx, pub, h, { upstream: false });
      if (ok) expectPath(ctx, [tr]);
      for (const [ch, acc] of pub.accepted) {
        const epochs = new Set([...acc.values()].map((a) => a.epoch));
        ctx.check(epochs.size === 1, `${ch}: the restart changed the channel's epoch (${[...epochs].join(' → ')}): history was not kept`);
      }
      const sec = (ms) => (ms != null ? `${(ms / 1000).toFixed(1)}s` : 'never');
      ctx.result.extra = `down ${sec(down)}, back ${sec(back)}`;
      ctx.note(`upstream across the restart (informational): ${JSON.stringify(ctx.upstream)}`);
    },
  };
}

export const cases = ['websocket', 'sse', 'longpoll'].map(restartCase);
