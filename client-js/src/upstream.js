import { FerryError } from './errors.js';
import { shouldReconnect } from './reconnect.js';

// A POST carries at most this many frames; the rest follow in the next one.
const BATCH = 256;

/**
 * @typedef {import('./transports/index.js').Frame} Frame
 * @typedef {import('./transports/index.js').Transport} Transport
 * @typedef {import('./index.js').Position} Position
 * @typedef {{
 *   frame_: Frame, resolve_(p: Position | null | undefined): void, reject_(e: FerryError): void,
 *   timer_: unknown, sent_: boolean, out_: boolean,
 * }} Entry frame: numbered; sent: on the current route; out: went out at least once (may have
 *   been processed)
 */

/**
 * The session's upstream frames (send, pub), numbered with the session's sequence and kept
 * until the server acknowledges them. PROTOCOL.md §3 makes resending safe (the server
 * processes each seq once and acks duplicates), so everything unacknowledged goes again on
 * every new route: a new WebSocket, or from a WebSocket to POST /send and back.
 *
 * Sequence numbers belong to the client identity (cid), not to the session: they go on
 * across sessions, and a frame keeps its seq for life, so a resend after 4005 under a new
 * session is still recognised as a duplicate by the server (PROTOCOL.md §3).
 */
export class Upstream {
  #o;
  #clock;
  #delay;
  #onExpired;
  /** @type {Map<number, Entry>} seq → entry, in seq order */
  #queue = new Map();
  #seq = 0; // the last sequence number given
  /** @type {Transport | null} where frames go */
  #transport = null;
  /** @type {Transport | 'http' | null} what resends are keyed on: a WebSocket, or every POST /send */
  #route = null;
  #session = 0; // bumped by renewed: a 4005 or refusal from an older session means nothing
  #posting = false;
  #fails = 0; // failed POSTs (or rate-limited frames) in a row
  /** @type {unknown} */
  #retry = null;

  /**
   * @param {{maxQueue: number, sendTimeout: number}} o
   * @param {{setTimeout(fn: () => void, ms: number): unknown, clearTimeout(id: unknown): void}} clock
   * @param {(attempt: number) => number} retryDelay
   * @param {() => void} onExpired a POST found the session expired (4005)
   */
  constructor(o, clock, retryDelay, onExpired) {
    this.#o = o;
    this.#clock = clock;
    this.#delay = retryDelay;
    this.#onExpired = onExpired;
  }

  /**
   * Queues a frame (without seq); resolves when it is acknowledged, with the position a pub
   * got (see Ferry.publish).
   * @param {Frame} frame @returns {Promise<any>}
   */
  push_(frame) {
    const { maxQueue, sendTimeout } = this.#o;
    if (this.#queue.size >= maxQueue) return Promise.reject(new FerryError('queue-full', `upstream queue full (${maxQueue})`, 'not-sent'));
    return new Promise((resolve, reject) => {
      /** @type {Entry} */
      const e = { frame_: { ...frame, seq: ++this.#seq }, resolve_: resolve, reject_: reject, timer_: null, sent_: false, out_: false };
      e.timer_ = this.#clock.setTimeout(() => this.#settle(e, new FerryError('timeout', `no ack in ${sendTimeout} ms`)), sendTimeout);
      this.#queue.set(this.#seq, e);
      this.flush_();
    });
  }

  /** An ack frame (or one entry of a POST's acks). @param {Frame} a */
  ack_(a) {
    const e = this.#queue.get(/** @type {number} */ (a.seq));
    if (!e) return; // timed out already, or a duplicate ack
    const err = /** @type {{code: number, reason: string} | undefined} */ (a.err);
    if (err?.code === 4029) {
      // Rate limited, or a duplicate whose first attempt has no outcome yet: nothing is
      // decided; send it again after a backoff.
      e.sent_ = false;
      return this.#retryLater();
    }
    this.#fails = 0;
    // A refusal was not processed, except an internal error (a publish whose outcome the
    // server could not learn counts as processed there, and is not retried). A duplicate
    // (dup) carries the first attempt's outcome: its error, or a pub's position.
    if (err) this.#settle(e, new FerryError(err.code, err.reason, err.code === 1011 ? 'unknown' : 'not-sent'));
    else this.#settle(e, null, typeof a.ep === 'string' ? { epoch: a.ep, offset: /** @type {number} */ (a.off) } : null);
  }

  /**
   * Routes frames through t (null: hold them). A new route resends everything unacked.
   * @param {Transport | null} t
   */
  use_(t) {
    const route = t && (t.http_ ? 'http' : t);
    if (route !== this.#route) {
      this.#route = route;
      for (const e of this.#queue.values()) e.sent_ = false;
    }
    this.#transport = t;
    this.flush_();
  }

  /** A new session replaced an expired one: the seq numbers go on (the cid outlives it). */
  renewed_() {
    this.#session++;
  }

  /** @param {FerryError} err */
  fail_(err) {
    this.#clock.clearTimeout(this.#retry);
    for (const e of [...this.#queue.values()]) this.#settle(e, err);
  }

  flush_() {
    const t = this.#transport;
    if (!t || this.#retry !== null || (t.http_ && this.#posting)) return;
    /** @type {Entry[]} */
    const batch = [];
    for (const e of this.#queue.values()) {
      if (!e.sent_ && batch.push(e) === BATCH) break;
    }
    if (!batch.length) return;
    for (const e of batch) e.sent_ = e.out_ = true;
    const acks = t.send_(batch.map((e) => e.frame_));
    if (!acks) return; // a WebSocket: acks come back as frames
    const session = this.#session;
    const current = () => session === this.#session;
    this.#posting = true;
    acks.then(
      (list) => {
        this.#posting = false;
        // Acks of an older session hold too: the dedupe is the cid's.
        for (const a of list) this.ack_(a);
        // A frame the response didn't acknowledge goes again with the next POST.
        for (const e of batch) e.sent_ = false;
        this.flush_();
      },
      (err) => {
        this.#posting = false;
        for (const e of batch) e.sent_ = false;
        if (err.code === 4005) {
          // Unless a new session has replaced the one that expired meanwhile.
          if (current()) this.#onExpired();
        } else if (typeof err.code === 'number' && !shouldReconnect(err.code)) {
          // Refused as a whole (malformed, too big, unauthorized): sending it again can't help.
          if (current()) for (const e of batch) this.#settle(e, err);
        } else {
          // A lost response or a failing proxy: the same frames go again, the server dedupes.
          return this.#retryLater();
        }
        this.flush_();
      },
    );
  }

  #retryLater() {
    if (this.#retry !== null) return;
    this.#retry = this.#clock.setTimeout(() => {
      this.#retry = null;
      this.flush_();
    }, this.#delay(this.#fails++));
  }

  /**
   * Takes e out of the queue: rejected with err, or resolved (a pub with its position).
   * @param {Entry} e @param {FerryError | null} err @param {Position | null} [position]
   */
  #settle(e, err, position) {
    this.#clock.clearTimeout(e.timer_);
    if (this.#queue.get(/** @type {number} */ (e.frame_.seq)) !== e) return;
    this.#queue.delete(/** @type {number} */ (e.frame_.seq));
    if (err) e.reject_(err.delivery ? err : new FerryError(err.code, err.reason, e.out_ ? 'unknown' : 'not-sent'));
    else e.resolve_(e.frame_.t === 'pub' ? position : undefined);
  }
}
