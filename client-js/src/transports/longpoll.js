import { attachUrl, call, post } from './http.js';

// How long past the hold a poll may stay unanswered before it counts as cut.
const SLACK = 10000;
// Failed polls in a row (network errors, gateway errors) before the attachment gives up.
const FAILS = 3;

/** @type {import('./index.js').TransportFactory} */
export function longpoll(o) {
  let done = false;
  /** @type {AbortController | undefined} */
  let ctl;
  /** @type {unknown} the pause before a retry */
  let pause;
  /** @param {number} code @param {string} reason */
  const end = (code, reason) => {
    if (done) return;
    done = true;
    o.onClose_(code, reason);
  };

  async function loop() {
    let hello = 1; // the first poll of an attachment asks for hello: it returns at once and proves the path
    for (let fails = 0; !done; ) {
      // A newer attachment of ours is on its way: polling again would supersede it.
      if (!hello && o.replaced_()) return end(4001, 'superseded');
      let body;
      try {
        const href = attachUrl(o, '/poll', { hello: hello || null, hold: o.hold_ });
        body = await call(o, href, o.token_, undefined, o.holdMs_ + SLACK, (ctl = new AbortController()));
      } catch (e) {
        const err = /** @type {import('../errors.js').FerryError} */ (e);
        if (done) return;
        if (typeof err.code === 'number') return end(err.code, err.reason);
        // A cut or failed poll is an ordinary retry from the same cursor, until it keeps failing.
        if (++fails >= FAILS) return end(1006, `poll-failed: ${err.reason}`);
        await new Promise((r) => (pause = o.setTimeout(() => r(undefined), o.retry_(fails - 1))));
        continue;
      }
      if (done) return;
      if (body === null) {
        // 204: a newer poll of this session took over; it is ours unless we are being replaced.
        if (o.replaced_()) return end(4001, 'superseded');
        continue;
      }
      fails = 0;
      hello = 0;
      for (const f of body.frames ?? []) {
        if (done) return;
        o.onFrame_(f);
      }
    }
  }

  return {
    http_: true,
    // loop() handles its own failures; a throw past them (a bug) must still end the attachment.
    open_() { loop().catch((e) => end(1006, `poll-failed: ${e?.message ?? e}`)); },
    send_: (frames) => post(o, frames),
    close_() {
      done = true;
      ctl?.abort();
      o.clearTimeout(pause);
    },
  };
}
