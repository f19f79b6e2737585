// Several nodes (issue 8): a real redis-server, three Ferry nodes sharing it (--redis, one
// --secret, their own --node-id) behind nginx round-robin with no stickiness (nginx/lb.conf).
// The page loads the client from the balancer and talks only to it; the publisher posts to
// the balancer's /ferry/api/publish, so consecutive publishes land on different nodes, and
// the page's upstream sends do too.
//
//   cluster:<transport>       every message once, in order, at the offset the API gave;
//                             every upstream send echoed once. For long-polling, polls must
//                             have been served by at least two nodes (nginx's access log).
//   cluster-kill:<transport>  the same, and mid-stream the node holding the page's
//                             attachment (the last "attached" in the node logs) is killed
//                             with SIGKILL. nginx skips the dead node; the client resumes on
//                             another one with nothing lost or repeated (no reset: history is
//                             in Redis) and every acknowledged send echoed exactly once.
//   cluster-drain:<transport> the same with SIGTERM: the node drains (close 4003 to its
//                             clients, its listener closed) and exits; its clients move to
//                             the other nodes and resume, nothing lost or repeated.
//
// A publish that nginx answers with 502/504 after a node died may or may not have been
// stored (the POST reached the node, which died before answering; nginx does not resend a
// POST): it is counted as unknown, never resent, so it cannot produce a duplicate on purpose.
import fs from 'node:fs';
import { FerryNode, requireFlags } from '../lib/ferry.js';
import { Redis } from '../lib/redis.js';
import { Nginx } from '../lib/nginx.js';
import { Publisher } from '../lib/publisher.js';
import {
  CHANNELS, disconnects, expectPath, finish, page, steps,
} from '../lib/flow.js';
import { delay, waitFor } from '../lib/util.js';

const NODES = 3;
const RUN = 8000; // publishing in cluster:<t>
const KILL_RUN = 5000; // publishing before and after the kill in cluster-kill:<t>

/** A publisher for the balancer: an ambiguous 502/504 (node died mid-request) is unknown. */
export class BalancedPublisher extends Publisher {
  async _publish(ch, seq) {
    const r = await super._publish(ch, seq);
    if (r === 'retry' && /^HTTP 50[24]\b/.test(this.lastError || '')) {
      this.refused--;
      this.unknown.push({ ch, seq, error: this.lastError });
      return 'unknown';
    }
    return r;
  }
}

/** Redis, NODES ferry nodes on it and nginx (lb) in front; all stopped by ctx. */
async function cluster(ctx) {
  await requireFlags('redis', 'node-id');
  const redis = new Redis({ dir: ctx.dir });
  ctx.defer(() => redis.stop(), 'stop redis');
  await redis.start();
  ctx.note(`redis ${redis.url} (log ${redis.dir}/redis.log)`);
  const nodes = [];
  for (let i = 1; i <= NODES; i++) {
    const name = `ferry${i}`;
    const n = new FerryNode({ dir: ctx.dir, name, flags: { redis: redis.url, 'node-id': name } });
    ctx.defer(() => n.stop({ timeout: 10000 }), `stop ${name}`);
    nodes.push(n);
  }
  await Promise.all(nodes.map((n) => n.start()));
  for (const n of nodes) ctx.note(`${n.name} ${n.url} (log ${n.logFile})`);
  // A failed node is left out for 30 s: longer than the rest of the scenario.
  const ng = new Nginx({
    dir: ctx.dir, template: 'lb', name: 'lb', upstreams: nodes.map((n) => `${n.addr} max_fails=1 fail_timeout=30s`),
  });
  ctx.defer(() => ng.stop(), 'stop lb');
  await ng.start();
  ctx.note(`lb ${ng.url} (logs ${ng.prefix})`);
  return { redis, nodes, ng };
}

function startPublisher(ctx, ng) {
  const p = new BalancedPublisher({ url: ng.url, channels: CHANNELS, rate: 20 });
  ctx.defer(() => p.stop().catch(() => {}), 'stop publisher');
  return p.start();
}

/** Node name per upstream address, for the access log. */
const nodeByAddr = (nodes) => new Map(nodes.map((n) => [n.addr, n.name]));

/** Nodes (by name) that answered requests whose path starts with `prefix`, with counts. */
export function servedBy(ng, nodes, re) {
  const names = nodeByAddr(nodes);
  const out = {};
  for (const e of ng.accessEntries()) {
    if (!re.test(e.request)) continue;
    // $upstream_addr lists every node tried ("a, b"); the last one answered.
    const last = e.up.split(/,\s*/).pop();
    const who = names.get(last) ?? last;
    out[who] = (out[who] || 0) + 1;
  }
  return out;
}

export const fmtCounts = (o) => Object.entries(o).sort().map(([k, v]) => `${k}:${v}`).join(' ') || 'none';

/** "attached" log lines of a node for `tr` (info for ws/sse, debug for each poll), with times. */
export function attaches(n, tr) {
  return n.grepLog(new RegExp(`attached.*transport=${tr}\\b`)).map((l) => {
    const m = /time=(\S+)/.exec(l);
    return { t: m ? Date.parse(m[1]) : NaN, line: l };
  }).filter((x) => !Number.isNaN(x.t));
}

/** The node with the most recent attachment of the page on `tr`. */
export function holder(nodes, tr) {
  let best = null;
  for (const n of nodes) {
    const a = attaches(n, tr);
    const last = a[a.length - 1];
    if (last && (!best || last.t > best.t)) best = { node: n, t: last.t };
  }
  return best?.node ?? null;
}

/**
 * Where the page's connections were served, per node: polls from nginx's access log (each
 * poll is one request, logged when it ends); a WebSocket or an SSE stream is logged by nginx
 * only when it closes, so those come from the nodes' "attached" lines.
 */
export function connsBy(ng, nodes, tr) {
  if (tr === 'longpoll') return servedBy(ng, nodes, /^GET \/ferry\/poll\b/);
  const out = {};
  for (const n of nodes) {
    const k = attaches(n, tr).length;
    if (k) out[n.name] = k;
  }
  return out;
}

function clusterCase(tr) {
  return {
    name: `cluster:${tr}`,
    weight: 30,
    timeout: 90000,
    async run(ctx) {
      const { nodes, ng } = await cluster(ctx);
      const h = await page(ctx, ng.url, { options: { transports: [tr] } });
      const pub = startPublisher(ctx, ng);
      const ok = await steps(ctx, async () => {
        ctx.result.land = await h.waitForTransport(tr, { timeout: 8000 });
        await delay(RUN); // the stream runs; nothing to wait for but time
      });
      await finish(ctx, pub, h);
      if (ok) expectPath(ctx, [tr]);
      const pubs = servedBy(ng, nodes, /^POST \/ferry\/api\/publish\b/);
      const sends = servedBy(ng, nodes, /^POST \/ferry\/send\b/);
      const conns = connsBy(ng, nodes, tr);
      ctx.check(Object.keys(pubs).length === NODES, `publishes were served by ${fmtCounts(pubs)}, want all ${NODES} nodes`);
      if (tr === 'longpoll') {
        ctx.check(Object.keys(conns).length >= 2, `polls were served by ${fmtCounts(conns)}, want at least 2 nodes`);
      }
      ctx.check(disconnects(ctx.snap) === 0, `the client reconnected ${disconnects(ctx.snap)} times with every node up`);
      ctx.result.extra = `${tr === 'longpoll' ? 'polls' : tr} ${fmtCounts(conns)}; pub ${fmtCounts(pubs)}`
        + (Object.keys(sends).length ? `; send ${fmtCounts(sends)}` : '');
    },
  };
}

function killCase(tr, signal = 'SIGKILL') {
  const what = signal === 'SIGKILL' ? 'killed' : 'drained';
  return {
    name: `cluster-${signal === 'SIGKILL' ? 'kill' : 'drain'}:${tr}`,
    weight: 40,
    timeout: 120000,
    async run(ctx) {
      const { nodes, ng } = await cluster(ctx);
      const h = await page(ctx, ng.url, { options: { transports: [tr] } });
      const pub = startPublisher(ctx, ng);
      let victim = null;
      let back = null;
      const ok = await steps(ctx, async () => {
        ctx.result.land = await h.waitForTransport(tr, { timeout: 8000 });
        await delay(KILL_RUN);
        victim = holder(nodes, tr);
        if (!victim) throw new Error(`no node logged an "attached" for ${tr}: cannot tell which node to kill`);
        const before = await h.count();
        const t0 = Date.now();
        const st = await victim.stop({ signal });
        ctx.note(`${what} ${victim.name} (${signal}) at ${new Date(t0).toISOString()}: ${JSON.stringify(st)}`);
        if (signal === 'SIGTERM') {
          ctx.check(st?.code === 0, `${victim.name} did not drain cleanly on SIGTERM: ${JSON.stringify(st)}`);
        }
        const rest = nodes.filter((n) => n !== victim);
        // Back: attached on another node after the kill, connected on tr, messages flowing.
        await waitFor(async () => rest.some((n) => attaches(n, tr).some((a) => a.t >= t0 - 5)), {
          timeout: 15000, interval: 100, what: `the client to attach on a surviving node after ${victim.name} was ${what}`,
        });
        await h.waitForTransport(tr, { timeout: 15000 });
        await waitFor(async () => (await h.count()) > before + 20, {
          timeout: 15000, what: `messages to flow again after ${victim.name} was ${what}`,
        });
        back = Date.now() - t0;
        await delay(KILL_RUN);
      });
      await finish(ctx, pub, h);
      if (ok) expectPath(ctx, [tr]);
      if (victim && tr !== 'longpoll') {
        // The stopped node held the stream: the client must have noticed and reconnected.
        ctx.check(disconnects(ctx.snap) >= 1, `the client never reconnected: ${victim.name} did not hold its ${tr}`);
      }
      for (const [ch, acc] of pub.accepted) {
        const epochs = new Set([...acc.values()].map((a) => a.epoch));
        ctx.check(epochs.size === 1, `${ch}: the epoch changed (${[...epochs].join(' → ')}) across the kill`);
      }
      const conns = connsBy(ng, nodes, tr);
      const pubs = servedBy(ng, nodes, /^POST \/ferry\/api\/publish\b/);
      const bad = ng.accessEntries().filter((e) => e.status >= 500);
      if (bad.length) ctx.note(`nginx 5xx after ${victim?.name} was ${what}: ${bad.slice(0, 5).map((e) => `${e.status} ${e.request.split('?')[0]} up=${e.up}`).join('; ')}`);
      if (pub.unknown.length) ctx.note(`publishes with unknown outcome: ${JSON.stringify(pub.unknown.slice(0, 5))}`);
      fs.writeFileSync(`${ctx.dir}/served.json`, JSON.stringify({ conns, pubs, victim: victim?.name }, null, 2));
      const sec = (ms) => (ms != null ? `${(ms / 1000).toFixed(1)}s` : 'never');
      ctx.result.extra = `${what} ${victim?.name ?? 'none'}, back ${sec(back)}; ${tr === 'longpoll' ? 'polls' : tr} ${fmtCounts(conns)}`
        + (pub.unknown.length ? `; pub unknown ${pub.unknown.length}` : '');
    },
  };
}

const TRANSPORTS = ['websocket', 'sse', 'longpoll'];
export const cases = [
  ...TRANSPORTS.map(clusterCase),
  ...TRANSPORTS.map((tr) => killCase(tr)),
  ...TRANSPORTS.map((tr) => killCase(tr, 'SIGTERM')),
];
