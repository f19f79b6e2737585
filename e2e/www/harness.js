// The page side of the e2e scenarios. It runs the real client, loaded from the server (or the
// proxy in front of it) at /ferry/client.js, and records everything the test checks into
// window.e2e: each message received (payload seq and meta), resets, states, transports,
// errors, and, when asked, the upstream sends and their echoes. The test reads it with
// page.evaluate(() => e2e.snapshot()).
const cfg = window.E2E_CFG || {};
// Tabs that share one session (scenarios/share.js) load the sharing entry, which imports the base.
const { Ferry } = await import(cfg.options?.share ? '/ferry/share.js' : '/ferry/client.js');
const now = () => Date.now();

const S = {
  cfg,
  start: now(),
  msgs: [], // {t, ch, ep, off, seq, tr}
  resets: [], // {t, ch, epoch, offset, reason}
  subscribed: [], // {t, ch, epoch, offset}
  subErrors: [], // {t, ch, code, reason}
  states: [], // {t, state, transport, code, reason}
  transports: [], // {t, from, to, reason}
  timeline: [], // {t, state, transport}: every change of (state, transport)
  errors: [], // {t, code, message}
  up: { sent: 0, ackedN: [], dupAcks: 0, failed: [], echoes: [], sids: [] },
};
window.e2e = S;

// Ferry on another origin with cookies: the app gives the client a fetch that sends them
// (fetch's default, credentials 'same-origin', leaves them out cross-origin).
const withCookies = cfg.credentials ? { fetch: (u, init) => fetch(u, { ...init, credentials: 'include' }) } : {};
const ferry = new Ferry(cfg.base || '/ferry', { ...cfg.options, ...withCookies, debug: cfg.debug ? true : undefined });
window.ferry = ferry;

function mark() {
  const last = S.timeline[S.timeline.length - 1];
  const st = ferry.state;
  const tr = ferry.transport;
  if (!last || last.state !== st || last.transport !== tr) S.timeline.push({ t: now(), state: st, transport: tr });
}
ferry.on('state', (e) => {
  S.states.push({ t: now(), state: e.state, transport: e.transport ?? null, code: e.code, reason: e.reason });
  mark();
  if (e.state === 'connected') watchSession();
});
ferry.on('transport', (e) => {
  S.transports.push({ t: now(), from: e.from, to: e.to, reason: String(e.reason ?? '') });
  mark();
});
ferry.on('error', (e) => S.errors.push({ t: now(), code: e?.code, message: String(e?.message ?? e) }));
// A switch made without an event would still show up here.
setInterval(mark, 100);

for (const ch of cfg.channels || []) {
  const sub = ferry.subscribe(ch, (data, meta) => {
    S.msgs.push({ t: now(), ch: meta.channel, ep: meta.epoch, off: meta.offset, seq: data?.seq, tr: ferry.transport });
  });
  sub.on('reset', (e) => S.resets.push({ t: now(), ch, epoch: e.epoch, offset: e.offset, reason: e.reason }));
  sub.on('subscribed', (e) => S.subscribed.push({ t: now(), ch, epoch: e.epoch, offset: e.offset }));
  sub.on('error', (e) => S.subErrors.push({ t: now(), ch, code: e?.code, reason: String(e?.message ?? e) }));
}

// Upstream: send {n} every cfg.upstream ms once connected; the server's echo handler
// publishes {seq, echo: {n}} to $session:<sid>, which the page follows.
const sessionSubs = new Set();
function watchSession() {
  if (!cfg.upstream || !ferry.sid || sessionSubs.has(ferry.sid)) return;
  sessionSubs.add(ferry.sid);
  S.up.sids.push({ t: now(), sid: ferry.sid });
  const sub = ferry.subscribe(`$session:${ferry.sid}`, (data, meta) => {
    S.up.echoes.push({ t: now(), n: data?.echo?.n, seq: data?.seq, ep: meta.epoch, off: meta.offset });
  });
  sub.on('error', (e) => S.subErrors.push({ t: now(), ch: sub.channel, code: e?.code, reason: String(e?.message ?? e) }));
  if (!S.up.timer) {
    let n = 0;
    S.up.timer = setInterval(() => {
      if (S.up.stopped) return;
      const k = ++n;
      S.up.sent = k;
      ferry.send({ n: k }).then(
        (ack) => { S.up.ackedN.push(k); if (ack && ack.dup) S.up.dupAcks++; },
        (e) => S.up.failed.push({ n: k, code: e?.code, message: String(e?.message ?? e) }),
      );
    }, cfg.upstream);
  }
}
S.stopUpstream = () => { S.up.stopped = true; };

S.snapshot = () => ({
  start: S.start,
  now: now(),
  state: ferry.state,
  transport: ferry.transport,
  sid: ferry.sid,
  msgs: S.msgs,
  resets: S.resets,
  subscribed: S.subscribed,
  subErrors: S.subErrors,
  states: S.states,
  transports: S.transports,
  timeline: S.timeline,
  errors: S.errors,
  up: { sent: S.up.sent, ackedN: S.up.ackedN, dupAcks: S.up.dupAcks, failed: S.up.failed, echoes: S.up.echoes, sids: S.up.sids },
});
S.count = () => S.msgs.length;
