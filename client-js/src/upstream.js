import { FerryError } from './errors.js';
import { shouldReconnect } from './codes.js';

// A POST carries at most this many frames; the rest follow in the next one.
const BATCH = 256;

/**
 * The session's upstream frames (send, pub), numbered with the session's sequence and kept
 * until the server acknowledges them. PROTOCOL.md §3 makes resending safe (the server
 * processes each seq once and acks duplicates), so everything unacknowledged goes again on
 * every new route: a new WebSocket, or from a WebSocket to POST /send and back.
 */
export class Upstream {
  /**
   * @param {{maxQueue: number, sendTimeout: number}} o
   * @param {{setTimeout: Function, clearTimeout: Function}} clock
   * @param {(attempt: number) => number} retryDelay
   * @param {(err: FerryError) => void} onSession a POST found the session expired (4005)
   */
  constructor(o, clock, retryDelay, onSession) {
    this._o = o;
    this._c = clock;
    this._delay = retryDelay;
    this._onSession = onSession;
    this._q = new Map(); // seq → entry, in seq order
    this._seq = 0;
    this._t = null; // the transport frames go through
    this._route = null; // what resends are keyed on: a WebSocket, or 'http' for POST /send
    this._gen = 0; // bumped by renumber: acks of an older numbering mean nothing
    this._busy = false; // a POST is in flight
    this._fails = 0;
    this._retry = null;
  }

  get size() { return this._q.size; }

  /** Queues a frame (without seq) and resolves with the ack's position, see Ferry.publish. */
  push(frame) {
    if (this._q.size >= this._o.maxQueue) {
      return Promise.reject(new FerryError('queue-full', `upstream queue is full (${this._o.maxQueue} frames)`, 'not-sent'));
    }
    return new Promise((resolve, reject) => {
      // sent: on the current route; out: went out at least once (may have been processed).
      const e = { f: { ...frame, seq: ++this._seq }, resolve, reject, sent: false, out: false };
      e.timer = this._c.setTimeout(
        () => this._settle(e, new FerryError('timeout', `no ack within ${this._o.sendTimeout} ms`)),
        this._o.sendTimeout,
      );
      this._q.set(e.f.seq, e);
      this.flush();
    });
  }

  ack(a) {
    const e = this._q.get(a.seq);
    if (!e) return; // timed out already, or a duplicate ack
    if (a.err?.code === 4029) {
      // Rate limited: the server did not process it; send it again after a backoff.
      e.sent = false;
      if (this._retry === null) {
        this._retry = this._c.setTimeout(() => {
          this._retry = null;
          this.flush();
        }, this._delay(this._fails++));
      }
      return;
    }
    this._fails = 0;
    // A refusal was not processed, except an internal error (a publish whose outcome the
    // server could not learn counts as processed there, and is not retried).
    if (a.err) this._settle(e, new FerryError(a.err.code, a.err.reason, a.err.code === 1011 ? 'unknown' : 'not-sent'));
    else this._settle(e, null, typeof a.ep === 'string' ? { epoch: a.ep, offset: a.off } : null);
  }

  /** Routes frames through t (null: hold them). A new route resends everything unacked. */
  use(t) {
    const route = t && (t.http ? 'http' : t);
    if (route !== this._route) {
      this._route = route;
      for (const e of this._q.values()) e.sent = false;
    }
    this._t = t;
    this.flush();
  }

  /** A new session: its sequence starts again at 1, in the order the frames were made. */
  renumber() {
    const q = [...this._q.values()];
    this._q.clear();
    this._seq = 0;
    this._gen++;
    for (const e of q) {
      e.f = { ...e.f, seq: ++this._seq };
      e.sent = false;
      this._q.set(e.f.seq, e);
    }
  }

  fail(err) {
    this._c.clearTimeout(this._retry);
    for (const e of [...this._q.values()]) this._settle(e, err);
  }

  flush() {
    const t = this._t;
    if (!t || this._retry !== null || (t.http && this._busy)) return;
    const batch = [];
    for (const e of this._q.values()) {
      if (!e.sent) batch.push(e);
      if (batch.length === BATCH) break;
    }
    if (!batch.length) return;
    for (const e of batch) e.sent = e.out = true;
    const acks = t.send(batch.map((e) => e.f));
    if (!acks) return; // a WebSocket: acks come back as frames
    const gen = this._gen;
    this._busy = true;
    acks.then(
      (list) => {
        this._busy = false;
        if (gen === this._gen) for (const a of list) this.ack(a);
        // A frame the response didn't acknowledge goes again with the next POST.
        for (const e of batch) e.sent = false;
        this.flush();
      },
      (err) => {
        this._busy = false;
        for (const e of batch) e.sent = false;
        if (err.code === 4005) {
          // Unless a new session has replaced the one that expired meanwhile.
          if (gen === this._gen) this._onSession(err);
          return this.flush();
        }
        if (typeof err.code === 'number' && !shouldReconnect(err.code)) {
          // Refused as a whole (malformed, too big, unauthorized): sending it again can't help.
          if (gen === this._gen) for (const e of batch) this._settle(e, err);
          return this.flush();
        }
        // A lost response or a failing proxy: the same frames go again, the server dedupes.
        this._retry = this._c.setTimeout(() => {
          this._retry = null;
          this.flush();
        }, this._delay(this._fails++));
      },
    );
  }

  _settle(e, err, value) {
    this._c.clearTimeout(e.timer);
    if (this._q.get(e.f.seq) !== e) return;
    this._q.delete(e.f.seq);
    if (err) e.reject(err.delivery ? err : new FerryError(err.code, err.reason, e.out ? 'unknown' : 'not-sent'));
    else e.resolve(e.f.t === 'pub' ? value : undefined);
  }
}
