import { shouldReconnect } from './reconnect.js';
import { equalJitter } from './backoff.js';
import { Detector } from './detector.js';
import { data } from './codec.js';
import { transports } from './transports/index.js';
import { Attachment, cursor, WALK, BUFFERING, UPGRADE, RESUBSCRIBE, RESUME } from './attachment.js';
import { Bench } from './bench.js';
import { Connection } from './connection.js';

/**
 * @typedef {import('./index.js').TransportName} TransportName
 * @typedef {import('./transports/index.js').Frame} Frame
 * @typedef {import('./attachment.js').Purpose} Purpose
 */

/**
 * The session's attachments, from ATTACHING on: each transport's proof, the attachment that
 * carries the session once CONNECTED, and the swaps while CONNECTED (down when a proxy
 * buffers, up when the background probe succeeds, or the same transport with a new cursor).
 *
 * At most two attachments exist: #current, the one that proved itself and carries the
 * session, and #candidate, one being proved. Every transport callback names its attachment,
 * and callbacks of an attachment that is neither (replaced, dropped) are ignored.
 */
export class Attachments extends Connection {
  attachments_ = 0; // the id of the last attachment (share.js numbers a new leader's from the clock)
  /** @type {Attachment | null} */
  #current = null;
  /** @type {Attachment | null} */
  #candidate = null;
  /** @type {Detector | null} */
  #detector = null;
  /** @type {unknown} */
  #probeTimer = null;
  #failedProbes = 0; // upgrade probes failed in a row
  #bench = new Bench();
  #syncQueued = false;

  /** The transport carrying the session, or null while not connected. */
  get transport() { return (this.state === 'connected' && this.#current?.name_) || null; }

  /** @param {TransportName} name */
  benched_(name) { return this.#bench.has(name); }

  /** @param {TransportName[]} list @param {string} reason */
  walk_([first, ...rest], reason) {
    this.announce_(first, reason);
    this.#attach(first, reason, rest, WALK);
  }

  detach_() {
    if (this.#candidate) this.#drop(this.#candidate);
    if (this.#current) this.#drop(this.#current);
    this.env_.clearTimeout(this.#probeTimer);
    this.#probeTimer = null;
    this.upstream_.use_(null);
    for (const sub of this.subs_.values()) sub.state = 'subscribing';
  }

  /**
   * Opens an attachment as the candidate and starts its proof.
   * @param {TransportName} name @param {string} reason @param {TransportName[]} rest @param {Purpose} purpose
   */
  #attach(name, reason, rest, purpose) {
    if (this.#candidate) this.#drop(this.#candidate);
    const o = this.o_;
    const a = new Attachment(++this.attachments_, name, reason, rest, purpose, this.subs_.keys());
    const replacing = this.#current && this.#current.name_ !== name;
    this.log_('attach', a.id_, name, purpose);
    this.#candidate = a;
    a.proofTimer_ = this.timer_(() => this.#failed(a, 'proof-timeout'), o.proofTimeout);
    try {
      (a.transport_ = transports[name].create_({
        ...this.env_,
        base_: this.base_,
        session_: /** @type {string} */ (this.credential_),
        token_: this.token_,
        hold_: o.pollHold,
        holdMs_: this.#hold(),
        timeout_: o.requestTimeout,
        cursor_: () => cursor(a.channels_, this.subs_),
        // Orders attachments at the server (a late request can't take over from a newer
        // one) and tells its metrics what this one replaces and why.
        att_: a.id_,
        from_: replacing ? this.#current?.name_ ?? null : null,
        reason_: replacing ? reason : null,
        retry_: (i) => this.delay_(i),
        replaced_: () => !(a === this.#candidate || (a === this.#current && !this.#candidate)),
        onFrame_: (f) => this.#frame(a, f),
        onClose_: (code, why) => this.#closed(a, code, why),
      })).open_();
    } catch (e) {
      // A constructor that throws (a ws:// URL from an https:// page, a CSP connect-src, a
      // malformed URL) is a failed attempt like any other: the next transport goes at once.
      const err = /** @type {any} */ (e);
      this.#failed(a, `${name} threw ${err?.name ?? 'Error'}: ${err?.message ?? err}`);
    }
  }

  /** The hold of a long-poll: the app's, at most the server's. */
  #hold() {
    const n = this.negotiated_?.pollHoldMs || 25000;
    return this.o_.pollHold ? Math.min(this.o_.pollHold, n) : n;
  }

  /** @param {Attachment} a */
  #drop(a) {
    this.env_.clearTimeout(a.proofTimer_);
    if (a === this.#candidate) this.#candidate = null;
    if (a === this.#current) {
      this.#current = null;
      this.#stopDetector();
    }
    a.transport_?.close_();
  }

  #stopDetector() {
    this.#detector?.stop();
    this.#detector = null;
  }

  /** @param {Attachment} a @param {Frame} f */
  #frame(a, f) {
    if (a !== this.#current && a !== this.#candidate) return;
    if (f.t === 'close') return this.#closed(a, /** @type {number} */ (f.code), /** @type {string} */ (f.reason) || `close-${f.code}`);
    if (a !== this.#current) {
      if (f.t === 'hello') this.#proved(a, f);
      return;
    }
    if (f.t === 'ping') {
      a.pinged_ = true;
      this.#detector?.ping(/** @type {number} */ (f.ts));
    } else this.#detector?.alive();
    if (f.t === 'ack') return this.upstream_.ack_(f);
    if (f.t === 'unsub') a.channels_.delete(/** @type {string} */ (f.ch));
    this.route_(f, f.t === 'msg' ? data(f) : undefined);
    if (a.syncWhenConfirmed_ && !a.unconfirmed_(this.subs_)) {
      a.syncWhenConfirmed_ = false;
      this.#sync();
    }
  }

  /**
   * A channel's frame to its subscription: from the current attachment, or (share.js) from
   * the tab that leads a shared session, with its data decoded there.
   * @param {Frame} f @param {unknown} [d]
   */
  route_(f, d = f.d) {
    const ch = /** @type {string} */ (f.ch);
    const sub = this.subs_.get(ch);
    if (!sub) return;
    if (f.t === 'unsub') {
      this.subs_.delete(ch);
      return sub.end_(/** @type {number} */ (f.code), /** @type {string} */ (f.reason ?? ''));
    }
    if (f.t === 'msg' || f.t === 'sub' || f.t === 'reset') {
      const m = /** @type {Frame & {ep: string, off: number}} */ (f);
      if (sub.apply_(m, d)) this.emit_('message', { channel: ch, data: d, epoch: m.ep, offset: m.off });
    }
    // Unknown frame types are ignored (PROTOCOL.md §3), which leaves room for presence.
  }

  /** CONNECTED: the hello of `a` arrived, it carries the session from now on. @param {Attachment} a @param {Frame} hello */
  #proved(a, hello) {
    this.env_.clearTimeout(a.proofTimer_);
    const old = this.#current;
    this.#candidate = null;
    if (old) this.#drop(old);
    this.#current = a;
    this.connected_(a.name_);
    if (a.purpose_ === UPGRADE) this.#failedProbes = 0;
    this.#bench.lift(a.name_);
    this.announce_(a.name_, a.reason_);
    this.#detector = this.#newDetector(a, hello);
    this.setState_('connected');
    this.upstream_.use_(a.transport_);
    this.#sync();
    this.#probe();
  }

  /**
   * An attachment ended: by a close frame, a transport close, or a failed request.
   * @param {Attachment} a @param {number} code @param {string} why
   */
  #closed(a, code, why) {
    if (a !== this.#current && a !== this.#candidate) return;
    // 1007/1002: the platform refused what the transport carried (bytes that aren't UTF-8, a
    // frame a proxy corrupted): another transport may carry it, so it is no reason to stop.
    const corrupt = code === 1007 || code === 1002;
    const superseded = code === 4001;
    const terminal = !corrupt && !superseded && !shouldReconnect(code);
    if (corrupt) this.#judge(a, code);
    // Each way out below drops the attachments (expired_, terminate_ and lost_ reset them all).
    if (code === 4005 || code === 4006) return this.expired_(code);
    if (a === this.#candidate) return terminal ? this.terminate_(code, why) : this.#failed(a, why);
    if (this.#candidate && !terminal) {
      // Usually our own swap superseded it; the swap decides what comes next.
      this.log_('attachment', a.id_, 'ended during a swap:', code, why);
      a.ended_ = true;
      this.#stopDetector();
      this.upstream_.use_(null);
      return a.transport_?.close_();
    }
    // Nothing of ours replaced it: the session was taken over elsewhere.
    if (superseded) return this.terminate_(4001, 'superseded by another attachment of the session');
    if (terminal) return this.terminate_(code, why);
    if (!corrupt) this.#judge(a, code);
    this.lost_(code, why);
  }

  /**
   * A proved attachment broke, or one broke with 1007/1002: the bench decides whether the
   * transport goes last from now on, and the app hears of it by an `error` event.
   * @param {Attachment} a @param {number} code
   */
  #judge(a, code) {
    const stream = !a.pinged_ && !transports[a.name_].polled_;
    const err = this.#bench.judge(a.name_, code, cursor(this.subs_.keys(), this.subs_), stream);
    if (err) this.emit_('error', err);
  }

  /** The candidate `a` failed its proof: what follows depends on its purpose. @param {Attachment} a @param {string} why */
  #failed(a, why) {
    this.#drop(a);
    this.log_('attachment', a.id_, a.name_, 'failed:', why);
    const walking = a.purpose_ === WALK;
    if (a.rest_.length) {
      const [next, ...rest] = a.rest_;
      if (walking) this.announce_(next, why);
      return this.#attach(next, walking ? why : a.reason_, rest, a.purpose_);
    }
    if (walking) return this.retry_();
    if (a.purpose_ === UPGRADE) this.#failedProbes++;
    const cur = /** @type {Attachment} */ (this.#current);
    if (!cur.ended_) {
      // A new cursor that can't attach would fail again at once: take the backoff path.
      if (a.purpose_ === RESUBSCRIBE) return this.lost_(1006, why);
      this.#sync();
      return this.#probe();
    }
    // The swap superseded the attachment it was to replace, then failed: attach anew there.
    if (a.purpose_ !== RESUME) return this.#attach(cur.name_, RESUME, [], RESUME);
    this.lost_(1006, why);
  }

  // ---- moving between transports while CONNECTED -------------------------------------------

  /** @param {Attachment} a @param {Frame} hello */
  #newDetector(a, hello) {
    const b = this.o_.buffering;
    const polled = transports[a.name_].polled_;
    const interval = polled ? this.#hold() : hello.hb || this.negotiated_.heartbeatMs;
    if (!b || !interval) return null;
    return new Detector({ ...b, interval, clumps: !polled }, this.env_, (why) => this.#buffered(why));
  }

  /** The current stream is being buffered: move down one transport, make-before-break. @param {'late' | 'clumped'} why */
  #buffered(why) {
    const cur = /** @type {Attachment} */ (this.#current);
    const lower = this.usable_.slice(this.usable_.indexOf(cur.name_) + 1);
    this.log_('buffering:', why, lower[0] ?? 'nowhere to go');
    if (lower.length) return this.#attach(lower[0], BUFFERING, lower.slice(1), BUFFERING);
    // With nothing below, a silent stream is most likely a dead one (a half-open TCP
    // connection can stay quiet for minutes): resume on a new attachment.
    if (why === 'late') {
      this.#drop(cur);
      this.lost_(4004, 'heartbeat timeout');
    }
  }

  /** While below the preferred transport, probe it in the background with a real attachment. */
  #probe() {
    const top = this.usable_[0];
    if (!this.#current || this.#current.name_ === top || this.#candidate || this.#probeTimer !== null) return;
    const { min, max } = this.o_.upgradeProbe;
    this.#probeTimer = this.timer_(() => {
      this.#probeTimer = null;
      if (this.#current && !this.#candidate && this.#current.name_ !== top) this.#attach(top, UPGRADE, [], UPGRADE);
    }, equalJitter(this.#failedProbes, min, max, this.random_));
  }

  // ---- subscriptions ----------------------------------------------------------------------

  /** Subscriptions changed: bring the attachment up to date once this tick's changes are in. */
  changed_() {
    if (this.#syncQueued) return;
    this.#syncQueued = true;
    queueMicrotask(() => {
      this.#syncQueued = false;
      this.#sync();
    });
  }

  /**
   * Makes the current attachment carry exactly the subscribed channels: in band on a
   * WebSocket, by a new attachment with the new cursor elsewhere. Waits while a swap is being
   * proved; the proof calls it again.
   */
  #sync() {
    const a = this.#current;
    if (!a || this.#candidate || a.ended_) return;
    const subs = this.subs_;
    const add = [...subs.keys()].filter((ch) => !a.channels_.has(ch));
    const del = [...a.channels_].filter((ch) => !subs.has(ch));
    if (!add.length && !del.length) return;
    if (!transports[a.name_].live_) {
      // The new attachment starts from the positions held now. A channel whose sub frame
      // hasn't arrived yet has none, and "from now" would skip what came in between: wait.
      if (a.unconfirmed_(subs)) return void (a.syncWhenConfirmed_ = true);
      return this.#attach(a.name_, RESUBSCRIBE, [], RESUBSCRIBE);
    }
    a.channels_ = new Set(subs.keys());
    /** @type {import('./transports/index.js').Transport} */ (a.transport_).send_([
      ...del.map((ch) => ({ t: 'unsub', ch })),
      ...add.map((ch) => {
        // Without a position, ep and off are left out of the frame (JSON drops undefined).
        const p = subs.get(ch)?.position;
        return { t: 'sub', ch, ep: p?.epoch, off: p?.offset };
      }),
    ]);
  }
}
