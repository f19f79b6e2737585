// Counting: what the publisher had accepted against what the page received, per channel.
// A message counts once, in order, by its payload seq AND by its position: offsets must go up
// by exactly 1 per channel, and each one must be the offset the publish API returned for
// that seq.

/**
 * @param {Publisher} pub
 * @param {object} snap page snapshot (www/harness.js)
 * @returns {{sent, expected, received, dup, missing, ooo, offsetErrs, mismatched, extra,
 *            resets, perChannel, firstMsgMs, problems: string[]}}
 */
export function analyze(pub, snap) {
  const r = {
    sent: pub.count, expected: 0, received: 0, dup: 0, missing: 0, ooo: 0, offsetErrs: 0,
    mismatched: 0, extra: 0, resets: snap.resets.length, perChannel: {}, problems: [],
    firstMsgMs: snap.msgs.length ? snap.msgs[0].t - snap.start : null,
  };
  const unknown = new Set(pub.unknown.map((u) => `${u.ch}#${u.seq}`));
  for (const [ch, acc] of pub.accepted) {
    const got = snap.msgs.filter((m) => m.ch === ch);
    const c = { sent: acc.size, expected: 0, received: 0, dup: 0, missing: 0, ooo: 0, offsetErrs: 0, mismatched: 0, extra: 0 };
    // Where the subscription started: the first `subscribed` position, else just before the
    // first message. Everything accepted after it is owed to the page.
    const sub = snap.subscribed.find((s) => s.ch === ch);
    const startEp = sub ? sub.epoch : got[0]?.ep;
    const startOff = sub ? sub.offset : got.length ? got[0].off - 1 : Infinity;
    const owed = new Map();
    for (const [seq, a] of acc) {
      if (a.epoch !== startEp || a.offset > startOff) owed.set(seq, a);
    }
    c.expected = owed.size;
    const seen = new Set();
    let maxSeq = -Infinity;
    let prev = null;
    for (const m of got) {
      if (seen.has(m.seq)) {
        c.dup++;
        if (c.dup <= 3) r.problems.push(`${ch}: duplicate seq ${m.seq} at offset ${m.ep}.${m.off}`);
      } else {
        seen.add(m.seq);
        if (m.seq < maxSeq) {
          c.ooo++;
          if (c.ooo <= 3) r.problems.push(`${ch}: seq ${m.seq} after seq ${maxSeq}`);
        }
      }
      maxSeq = Math.max(maxSeq, m.seq);
      if (prev && (m.ep !== prev.ep || m.off !== prev.off + 1)) {
        c.offsetErrs++;
        if (c.offsetErrs <= 3) r.problems.push(`${ch}: offset ${m.ep}.${m.off} after ${prev.ep}.${prev.off}`);
      }
      prev = m;
      const a = acc.get(m.seq);
      if (!a) {
        // Published by a request whose outcome was unknown, or not by this publisher.
        c.extra++;
        if (!unknown.has(`${ch}#${m.seq}`)) r.problems.push(`${ch}: received seq ${m.seq} that was never published`);
      } else if (a.epoch !== m.ep || a.offset !== m.off) {
        c.mismatched++;
        if (c.mismatched <= 3) r.problems.push(`${ch}: seq ${m.seq} came at ${m.ep}.${m.off}, published at ${a.epoch}.${a.offset}`);
      }
    }
    for (const seq of owed.keys()) if (!seen.has(seq)) c.missing++;
    if (c.missing) {
      const miss = [...owed.keys()].filter((s) => !seen.has(s));
      r.problems.push(`${ch}: ${c.missing} missing, seq ${rangeList(miss)}`);
    }
    c.received = [...seen].filter((s) => owed.has(s)).length;
    r.perChannel[ch] = c;
    for (const k of ['expected', 'received', 'dup', 'missing', 'ooo', 'offsetErrs', 'mismatched', 'extra']) r[k] += c[k];
  }
  for (const x of snap.resets) r.problems.push(`reset on ${x.ch} to ${x.epoch}.${x.offset}: ${x.reason}`);
  return r;
}

/**
 * Upstream: every acknowledged send must come back as exactly one echo (missing: acked and
 * never echoed), and every send must settle, acked or failed (unsettled: neither, which a
 * send that was never answered shows until the client's sendTimeout rejects it).
 */
export function analyzeUpstream(snap) {
  const u = snap.up;
  const count = new Map();
  for (const e of u.echoes) count.set(e.n, (count.get(e.n) || 0) + 1);
  let dup = 0;
  for (const v of count.values()) if (v > 1) dup += v - 1;
  const acked = new Set(u.ackedN);
  const failedN = new Set(u.failed.map((f) => f.n));
  const missed = [];
  const unsettled = [];
  for (let n = 1; n <= u.sent; n++) {
    if (acked.has(n) && !count.has(n)) missed.push(n);
    if (!acked.has(n) && !failedN.has(n)) unsettled.push(n);
  }
  return {
    sent: u.sent, acked: acked.size, echoed: count.size, dup, missing: missed.length, missed,
    unsettled, failed: u.failed.length, sessions: u.sids.length,
  };
}

/** What analyzeUpstream found against the rule that each acknowledged send echoes once. */
export function upstreamProblems(up) {
  const ns = (list) => list.slice(0, 10).join(',');
  const problems = [];
  if (up.dup) problems.push(`upstream: ${up.dup} sends echoed more than once`);
  if (up.missing) problems.push(`upstream: ${up.missing} of ${up.sent} acknowledged sends never echoed (n=${ns(up.missed)})`);
  if (up.unsettled.length) problems.push(`upstream: ${up.unsettled.length} of ${up.sent} sends neither acknowledged nor failed (n=${ns(up.unsettled)})`);
  return problems;
}

/** The result line of analyzeUpstream: "echoed/sent", with duplicates and failures. */
export const fmtUpstream = (up) => `${up.echoed}/${up.sent}` + (up.dup ? ` dup ${up.dup}` : '') + (up.failed ? ` fail ${up.failed}` : '');

/** "1-4,7,9-12" from a sorted list of integers. */
export function rangeList(xs, max = 12) {
  const out = [];
  for (let i = 0; i < xs.length; ) {
    let j = i;
    while (j + 1 < xs.length && xs[j + 1] === xs[j] + 1) j++;
    out.push(i === j ? `${xs[i]}` : `${xs[i]}-${xs[j]}`);
    i = j + 1;
  }
  return out.length > max ? out.slice(0, max).join(',') + `,… (${out.length} ranges)` : out.join(',');
}

/** "websocket 0.3s → longpoll 3.4s" from a page timeline: where the connected client was. */
export function transportPath(snap) {
  const steps = [];
  for (const x of snap.timeline) {
    if (x.state !== 'connected' || !x.transport) continue;
    if (steps.length && steps[steps.length - 1].tr === x.transport) continue;
    steps.push({ tr: x.transport, at: x.t - snap.start });
  }
  return steps;
}

export const fmtPath = (steps) => steps.map((s) => `${s.tr}@${(s.at / 1000).toFixed(1)}s`).join('→') || '-';
