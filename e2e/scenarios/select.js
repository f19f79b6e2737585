// Transport selection: which transport the client lands on, by itself, on each kind of path.
//   open          straight to the server: WebSocket.
//   open-nginx    through a well-configured nginx (plain.conf): still WebSocket.
//   no-upgrade    through a proxy that strips Upgrade: SSE, within a few seconds.
//   buffer-gzip   through a proxy that buffers and gzips streams: long-polling, within a
//                 few seconds (SSE "connects" but its proof never arrives).
// Each then carries the publisher's stream for a while: every message once, in order.
import { expectPath, finish, node, page, proxy, publisher, steps } from '../lib/flow.js';
import { delay } from '../lib/util.js';

const LAND_WITHIN = 8000; // "within a few seconds"; the client's proof timeout is 3 s
const CARRY = 10000; // how long the landed transport carries the stream

function selectCase(name, template, want) {
  return {
    name,
    weight: 20,
    timeout: 90000,
    async run(ctx) {
      const n = await node(ctx);
      const ng = template ? await proxy(ctx, template, [n]) : null;
      const h = await page(ctx, ng ? ng.url : n.url);
      const pub = publisher(ctx, n);
      const ok = await steps(ctx, async () => {
        ctx.result.land = await h.waitForTransport(want, { timeout: LAND_WITHIN });
        await delay(CARRY); // the stream runs; nothing to wait for but time
      });
      await finish(ctx, pub, h);
      if (ok) expectPath(ctx, [want]);
    },
  };
}

export const cases = [
  selectCase('open', null, 'websocket'),
  selectCase('open-nginx', 'plain', 'websocket'),
  selectCase('no-upgrade', 'no-upgrade', 'sse'),
  selectCase('buffer-gzip', 'buffer-gzip', 'longpoll'),
];
