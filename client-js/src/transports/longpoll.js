import { url, auth, call, post } from './http.js';

// How long past the hold a poll may stay unanswered before it counts as cut.
const SLACK = 10000;
// Failed polls in a row (network errors, gateway errors) before the attachment gives up.
const FAILS = 3;

/** @type {import('./index.js').TransportFactory} */
export function longpoll(o) {
  let done = false;
  let ctl = null;
  let wait = null; // the pause before a retry
  const end = (code, reason) => {
    if (done) return;
    done = true;
    o.onClose(code, reason);
  };
  const pause = (ms) => new Promise((r) => (wait = o.setTimeout(() => r(undefined), ms)));

  async function loop() {
    let hello = 1; // the first poll of an attachment asks for hello: it returns at once and proves the path
    for (let fails = 0; !done; ) {
      // A newer attachment of ours is on its way: polling again would supersede it.
      if (!hello && o.replaced()) return end(4001, 'superseded');
      let body;
      try {
        const href = url(o.base, '/poll', { session: o.session, cursor: o.cursor(), hello: hello || null, hold: o.hold, att: o.att, from: o.from, reason: o.reason });
        body = await call(o, href, { headers: auth(o.token) }, o.holdMs + SLACK, (ctl = new AbortController()));
      } catch (e) {
        if (done) return;
        if (typeof e.code === 'number') return end(e.code, e.reason);
        // A cut or failed poll is an ordinary retry from the same cursor, until it keeps failing.
        if (++fails >= FAILS) return end(1006, `poll-failed: ${e.reason}`);
        await pause(o.retry(fails - 1));
        continue;
      }
      if (done) return;
      if (body === null) {
        // 204: a newer poll of this session took over; it is ours unless we are being replaced.
        if (o.replaced()) return end(4001, 'superseded');
        continue;
      }
      fails = 0;
      hello = 0;
      for (const f of body.frames ?? []) {
        if (done) return;
        o.onFrame(f);
      }
    }
  }

  return {
    http: true,
    // loop() handles its own failures; a throw past them (a bug) must still end the attachment.
    open() { loop().catch((e) => end(1006, `poll-failed: ${e?.message ?? e}`)); },
    send: (frames) => post(o, frames),
    close() {
      done = true;
      ctl?.abort();
      o.clearTimeout(wait);
    },
  };
}
