// harness-selftest: the counting can fail. Feeds lib/check.js a made-up publisher record and
// page snapshots with a duplicate, a gap, a swap, a wrong offset and a reset, and checks each
// is caught; a clean stream must count clean. Runs in milliseconds, no processes.
import { analyze, analyzeUpstream } from '../lib/check.js';

function fakePub(n) {
  const accepted = new Map([['room:a', new Map()]]);
  for (let s = 1; s <= n; s++) accepted.get('room:a').set(s, { epoch: 'e1', offset: 10 + s, t: 0 });
  return { count: n, accepted, unknown: [] };
}
const msg = (seq, off = 10 + seq, ep = 'e1') => ({ t: 1, ch: 'room:a', ep, off, seq });
function snap(msgs, extra = {}) {
  return {
    start: 0, msgs, resets: [], subscribed: [{ t: 0, ch: 'room:a', epoch: 'e1', offset: 10 }],
    up: { sent: 0, ackedN: [], failed: [], echoes: [], sids: [] }, ...extra,
  };
}

async function run(ctx) {
  const pub = fakePub(5);
  const cases = [
    ['clean', [1, 2, 3, 4, 5].map((s) => msg(s)), { dup: 0, missing: 0, ooo: 0, offsetErrs: 0, mismatched: 0 }],
    ['duplicate', [1, 2, 2, 3, 4, 5].map((s) => msg(s)), { dup: 1 }],
    ['gap', [1, 2, 4, 5].map((s) => msg(s)), { missing: 1, offsetErrs: 1 }],
    ['lost tail', [1, 2, 3, 4].map((s) => msg(s)), { missing: 1 }],
    ['swap', [1, 3, 2, 4, 5].map((s) => msg(s)), { ooo: 1 }],
    ['wrong offset', [msg(1), msg(2), msg(3, 99), msg(4), msg(5)], { mismatched: 1 }],
    ['lost head', [2, 3, 4, 5].map((s) => msg(s)), { missing: 1 }],
  ];
  for (const [name, msgs, want] of cases) {
    const a = analyze(pub, snap(msgs));
    for (const [k, v] of Object.entries(want)) {
      ctx.check(a[k] === v, `${name}: ${k} = ${a[k]}, want ${v} (problems: ${a.problems.join('; ')})`);
    }
    if (name !== 'clean') ctx.check(a.problems.length > 0, `${name}: no problem reported`);
  }
  const r = analyze(pub, snap([1, 2, 3, 4, 5].map((s) => msg(s)), {
    resets: [{ t: 1, ch: 'room:a', epoch: 'e2', offset: 0, reason: 'test' }],
  }));
  ctx.check(r.resets === 1 && r.problems.some((p) => p.includes('reset')), 'a reset is not reported');
  const up = analyzeUpstream({
    up: { sent: 4, ackedN: [1, 2, 3], failed: [], sids: [], echoes: [{ n: 1 }, { n: 1 }, { n: 3 }] },
  });
  ctx.check(up.dup === 1 && up.missing === 1 && up.missed[0] === 2,
    `upstream: dup ${up.dup} missing ${up.missed}, want 1 and [2]`);
  ctx.check(up.unsettled.length === 1 && up.unsettled[0] === 4, `upstream: unsettled ${up.unsettled}, want [4]`);
  ctx.result.transport = 'n/a (no browser)';
}

export const cases = [{ name: 'harness-selftest', run, timeout: 10000, weight: 0 }];
