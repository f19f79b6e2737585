// Ferry on a Redis Cluster (issue 16): three masters and three replicas of redis-server on
// loopback (lib/redis-cluster.js), three Ferry nodes on it (--redis redis+cluster://…, one
// --secret, their own --node-id) behind nginx round-robin with no stickiness (nginx/lb.conf),
// a page on <transport> and the publisher posting to the balancer throughout.
//
//   redis-cluster:<transport>  mid-stream the Redis master that owns room:a's slot is killed
//                              with SIGKILL, its replicas in sync (see killInSync: a master
//                              lost with writes its replicas lack is a known gap, not yet a
//                              reset); once its replica serves the slot, the Ferry node
//                              holding the page's attachment is killed with SIGKILL too.
//                              Every message reaches the page once, in order, at the offset
//                              the API gave, or the page got an explicit `reset` on that
//                              channel (then what the old epoch lost is not owed, and the new
//                              epoch must arrive whole). The row's `extra` says when each kill
//                              happened, how long the slot had no master, the resets, and the
//                              longest delivery gap (the longest time the page received
//                              nothing) and the worst publish-to-delivery latency.
//
// A publish answered with any 5xx while Redis or a node fails over may or may not have been
// stored (the node's script may have run on the master that died, or nginx's POST reached a
// node that died before answering): it is unknown, never resent, never counted as lost.
import fs from 'node:fs';
import path from 'node:path';
import { FerryNode, requireFlags } from '../lib/ferry.js';
import { RedisCluster } from '../lib/redis-cluster.js';
import { Nginx } from '../lib/nginx.js';
import { Publisher } from '../lib/publisher.js';
import { CHANNELS, page, steps } from '../lib/flow.js';
import { analyzeUpstream, fmtPath, fmtUpstream, rangeList, transportPath, upstreamProblems } from '../lib/check.js';
import { delay, waitFor } from '../lib/util.js';
import { attaches, connsBy, fmtCounts, holder } from './cluster.js';

const NODES = 3;
const RUN = 4000; // publishing before the first kill and after the last one
const VICTIM_CHANNEL = 'room:a'; // its slot's master is killed
const SETTLE = 35000; // the client's sendTimeout (30 s) and a margin
const PREFIX = 'ferry'; // the broker's default key prefix

/** 5xx from a node (Redis failing over) or from nginx (a node died) is unknown, not resent. */
class FailoverPublisher extends Publisher {
  async _publish(ch, seq) {
    const r = await super._publish(ch, seq);
    if (r === 'retry' && /^HTTP 5\d\d\b/.test(this.lastError || '')) {
      this.refused--;
      this.unknown.push({ ch, seq, error: this.lastError, t: Date.now() });
      return 'unknown';
    }
    return r;
  }
}

/**
 * What the page got against what the API accepted, per channel. As lib/check.js, except that
 * an explicit `reset` on a channel excuses the messages of the epoch it left: a message is
 * owed if it was accepted after the subscription's start and, when the channel was reset, in
 * the epoch of its last reset after the reset's offset. Offsets must go up by one within an
 * epoch; a change of epoch is only allowed through a reset.
 */
export function analyzeWithResets(pub, snap) {
  const r = {
    sent: pub.count, expected: 0, received: 0, dup: 0, missing: 0, ooo: 0, offsetErrs: 0,
    excused: 0, extra: 0, resets: snap.resets.length, problems: [], gapMs: 0, gapAt: null, latencyMs: 0,
  };
  const unknown = new Set(pub.unknown.map((u) => `${u.ch}#${u.seq}`));
  for (const [ch, acc] of pub.accepted) {
    const got = snap.msgs.filter((m) => m.ch === ch);
    const resets = snap.resets.filter((x) => x.ch === ch);
    const last = resets[resets.length - 1];
    const sub = snap.subscribed.find((s) => s.ch === ch);
    const startEp = sub ? sub.epoch : got[0]?.ep;
    const startOff = sub ? sub.offset : got.length ? got[0].off - 1 : Infinity;
    const owed = new Map();
    for (const [seq, a] of acc) {
      const afterStart = a.epoch !== startEp || a.offset > startOff;
      if (!afterStart) continue;
      if (last && !(a.epoch === last.epoch && a.offset > last.offset)) {
        r.excused++;
        continue;
      }
      owed.set(seq, a);
    }
    r.expected += owed.size;
    const seen = new Set();
    let maxSeq = -Infinity;
    let prev = null;
    for (const m of got) {
      if (seen.has(m.seq)) {
        if (++r.dup <= 3) r.problems.push(`${ch}: duplicate seq ${m.seq} at ${m.ep}.${m.off}`);
      } else {
        seen.add(m.seq);
        if (m.seq < maxSeq && ++r.ooo <= 3) r.problems.push(`${ch}: seq ${m.seq} after seq ${maxSeq}`);
      }
      maxSeq = Math.max(maxSeq, m.seq);
      if (prev && !(m.ep === prev.ep && m.off === prev.off + 1)) {
        const viaReset = resets.some((x) => x.t >= prev.t && x.t <= m.t && x.epoch === m.ep && m.off > x.offset);
        if (!viaReset && ++r.offsetErrs <= 3) r.problems.push(`${ch}: offset ${m.ep}.${m.off} after ${prev.ep}.${prev.off} with no reset between`);
      }
      prev = m;
      const a = acc.get(m.seq);
      if (!a) {
        r.extra++;
        if (!unknown.has(`${ch}#${m.seq}`)) r.problems.push(`${ch}: received seq ${m.seq} that was never published`);
      } else {
        if (a.epoch !== m.ep || a.offset !== m.off) {
          if (++r.offsetErrs <= 6) r.problems.push(`${ch}: seq ${m.seq} came at ${m.ep}.${m.off}, published at ${a.epoch}.${a.offset}`);
        }
        r.latencyMs = Math.max(r.latencyMs, m.t - a.t);
      }
    }
    const miss = [...owed.keys()].filter((s) => !seen.has(s));
    r.missing += miss.length;
    if (miss.length) r.problems.push(`${ch}: ${miss.length} owed and never received, seq ${rangeList(miss)}`);
    r.received += [...seen].filter((s) => owed.has(s)).length;
  }
  // The longest time the page received nothing, on any channel, while messages were owed.
  const ts = snap.msgs.map((m) => m.t).sort((a, b) => a - b);
  for (let i = 1; i < ts.length; i++) {
    if (ts[i] - ts[i - 1] > r.gapMs) { r.gapMs = ts[i] - ts[i - 1]; r.gapAt = ts[i - 1]; }
  }
  return r;
}

/** The Redis Cluster, NODES ferry nodes on it and nginx (lb) in front; all stopped by ctx. */
async function setup(ctx) {
  await requireFlags('redis', 'node-id');
  const rc = new RedisCluster({ dir: ctx.dir });
  ctx.defer(() => rc.stop(), 'stop redis cluster');
  await rc.start();
  ctx.note(`redis cluster ${rc.url} (logs ${rc.dir})`);
  const nodes = [];
  for (let i = 1; i <= NODES; i++) {
    const name = `ferry${i}`;
    const n = new FerryNode({ dir: ctx.dir, name, flags: { redis: rc.url, 'node-id': name } });
    ctx.defer(() => n.stop({ timeout: 10000 }), `stop ${name}`);
    nodes.push(n);
  }
  await Promise.all(nodes.map((n) => n.start()));
  for (const n of nodes) ctx.note(`${n.name} ${n.url} (log ${n.logFile})`);
  // max_fails=0: while a Redis master is down every node answers some requests 503 (the
  // shard is unavailable), which nginx would count as node failures and leave every node
  // out; a dead node is still skipped per request (connection refused, next upstream).
  const ng = new Nginx({
    dir: ctx.dir, template: 'lb', name: 'lb', upstreams: nodes.map((n) => `${n.addr} max_fails=0`),
  });
  ctx.defer(() => ng.stop(), 'stop lb');
  await ng.start();
  ctx.note(`lb ${ng.url} (logs ${ng.prefix})`);
  return { rc, nodes, ng };
}

/** Waits until the page has received `more` messages beyond `before`. */
const flowing = (h, before, what, more = 20) => waitFor(async () => (await h.count()) > before + more, {
  timeout: 20000, interval: 100, what: `messages to flow again after ${what}`,
});

function failoverCase(tr) {
  return {
    name: `redis-cluster:${tr}`,
    weight: 60,
    timeout: 150000,
    async run(ctx) {
      const { rc, nodes, ng } = await setup(ctx);
      const h = await page(ctx, ng.url, { options: { transports: [tr] } });
      const pub = new FailoverPublisher({ url: ng.url, channels: CHANNELS, rate: 20 });
      ctx.defer(() => pub.stop().catch(() => {}), 'stop publisher');
      pub.start();
      const ev = {}; // ms since the page started, per event
      const at = async () => (await h.page.evaluate(() => Date.now() - e2e.start));
      let master = null;
      let taker = null;
      let victim = null;
      const ok = await steps(ctx, async () => {
        ctx.result.land = await h.waitForTransport(tr, { timeout: 8000 });
        await delay(RUN);

        // 1. SIGKILL the Redis master that owns room:a's slot, its replicas in sync.
        master = await rc.masterOf(`${PREFIX}:ch:{${VICTIM_CHANNEL}}`);
        let before = await h.count();
        ev.redisKill = await at();
        const st = await rc.killInSync(master.port);
        ctx.note(`SIGKILLed redis master ${master.port} (slot ${master.slot}) at +${ev.redisKill} ms: ${JSON.stringify(st)}`);
        taker = await rc.waitServed(`${PREFIX}:ch:{${VICTIM_CHANNEL}}`, master.port);
        ev.redisBack = await at();
        ctx.note(`replica ${taker.port} serves slot ${master.slot} at +${ev.redisBack} ms`);
        await flowing(h, before, `redis master ${master.port} was killed`);
        // Both channels again, room:a included (its slot is on the new master now).
        const nA = async () => (await h.page.evaluate((c) => e2e.msgs.filter((m) => m.ch === c).length, VICTIM_CHANNEL));
        const a0 = await nA();
        await waitFor(async () => (await nA()) > a0 + 5, {
          timeout: 20000, interval: 100, what: `${VICTIM_CHANNEL} to flow again on the new master`,
        });

        // 2. SIGKILL the Ferry node holding the page's attachment.
        victim = holder(nodes, tr);
        if (!victim) throw new Error(`no node logged an "attached" for ${tr}: cannot tell which node to kill`);
        before = await h.count();
        const t0 = Date.now();
        ev.nodeKill = await at();
        const st2 = await victim.stop({ signal: 'SIGKILL' });
        ctx.note(`SIGKILLed ${victim.name} at +${ev.nodeKill} ms: ${JSON.stringify(st2)}`);
        const rest = nodes.filter((n) => n !== victim);
        await waitFor(async () => rest.some((n) => attaches(n, tr).some((a) => a.t >= t0 - 5)), {
          timeout: 15000, interval: 100, what: `the client to attach on a surviving node after ${victim.name} was killed`,
        });
        await h.waitForTransport(tr, { timeout: 15000 });
        await flowing(h, before, `${victim.name} was killed`);
        ev.nodeBack = await at();
        await delay(RUN);
      });

      // Stop publishing and sending; wait (bounded) until everything owed has arrived and
      // every send is settled. A send whose mark Redis took but whose answer was lost in the
      // failover stays pending (resends are answered 4029) until the client's sendTimeout,
      // 30 s, rejects it as of unknown outcome: the bound waits that long.
      await pub.stop();
      await h.stopUpstream();
      let snap;
      try {
        await waitFor(async () => {
          snap = await h.snapshot();
          return analyzeWithResets(pub, snap).missing === 0 && !analyzeUpstream(snap).unsettled.length;
        }, { timeout: SETTLE, interval: 250, what: 'the page to receive everything owed and settle its sends' });
      } catch (e) {
        ctx.fail(e.message);
      }
      snap = await h.snapshot();
      fs.writeFileSync(path.join(ctx.dir, 'snapshot.json'), JSON.stringify({
        snap,
        accepted: Object.fromEntries([...pub.accepted].map(([ch, m]) => [ch, Object.fromEntries(m)])),
        unknown: pub.unknown,
        events: ev,
      }));
      const a = analyzeWithResets(pub, snap);
      const up = analyzeUpstream(snap);
      const path_ = transportPath(snap);
      Object.assign(ctx.result, {
        transport: fmtPath(path_),
        firstMsg: snap.msgs.length ? snap.msgs[0].t - snap.start : null,
        sent: a.sent, expected: a.expected, received: a.received,
        dup: a.dup, missing: a.missing, ooo: a.ooo, offsetErrs: a.offsetErrs, resets: a.resets,
        up: fmtUpstream(up),
      });
      for (const p of a.problems) ctx.fail(p);
      if (a.expected === 0) ctx.fail('nothing was owed to the page: the publisher or the subscription never worked');
      for (const x of snap.resets) ctx.note(`reset on ${x.ch} to ${x.epoch}.${x.offset} at +${x.t - snap.start} ms: ${x.reason}`);
      for (const e of snap.subErrors) ctx.fail(`subscription error on ${e.ch}: ${e.code} ${e.reason}`);
      if (ok && path_.map((s) => s.tr).join('→') !== tr) ctx.fail(`transport path ${fmtPath(path_)}, want ${tr} only`);
      // Upstream: an acknowledged send must echo exactly once; a send the client was told
      // failed (the failover) is explicit, reported, not a loss.
      if (up.sent === 0) ctx.fail('the page sent nothing upstream (it never connected with a session?)');
      for (const p of upstreamProblems(up)) ctx.fail(p);
      if (up.failed) ctx.note(`upstream: ${up.failed} sends failed explicitly, e.g. ${JSON.stringify(snap.up.failed[0])}`);
      if (pub.unknown.length) ctx.note(`${pub.unknown.length} publishes with unknown outcome: ${JSON.stringify(pub.unknown.slice(0, 5))}`);
      const s = (ms) => (ms != null ? `${(ms / 1000).toFixed(1)}s` : '-');
      const conns = connsBy(ng, nodes, tr);
      ctx.result.extra = `redis ${master?.port ?? '-'} killed @${s(ev.redisKill)}, slot on ${taker?.port ?? '-'} @${s(ev.redisBack)}; `
        + `${victim?.name ?? 'no node'} killed @${s(ev.nodeKill)}, flowing @${s(ev.nodeBack)}; `
        + `resets ${a.resets}${a.excused ? ` (excused ${a.excused})` : ''}; longest gap ${s(a.gapMs)}`
        + `${a.gapAt != null ? ` @${s(a.gapAt - snap.start)}` : ''}, worst latency ${s(a.latencyMs)}; `
        + `${tr === 'longpoll' ? 'polls' : tr} ${fmtCounts(conns)}; pub unknown ${pub.unknown.length}`;
    },
  };
}

export const cases = ['websocket', 'sse', 'longpoll'].map(failoverCase);
