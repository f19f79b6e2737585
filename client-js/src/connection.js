import { shouldReconnect } from './reconnect.js';
import { FerryError } from './errors.js';
import { Emitter } from './emitter.js';
import { fullJitter } from './backoff.js';
import { Upstream } from './upstream.js';
import { transports } from './transports/index.js';
import { call } from './transports/http.js';
import { withDefaults, platform, logger } from './options.js';

/**
 * @typedef {import('./index.js').TransportName} TransportName
 * @typedef {import('./index.js').State} State
 * @typedef {any} Negotiated the negotiate response (PROTOCOL.md §2): sid, session, transports, limits…
 */

/*
 * The connection's phases. `state` (what the app sees) follows from them and from history:
 * a phase other than CONNECTED is 'connecting' until the first proof, 'reconnecting' after.
 *
 *   IDLE ──connect()──▶ NEGOTIATING ──▶ ATTACHING ──proof──▶ CONNECTED
 *                          ▲   │            │                   │ loss
 *                          │   ▼ failed     ▼ every transport   ▼
 *                          └── WAITING ◀────┴───────────────────┘
 *
 * close() or a terminal code goes to IDLE from anywhere. This file holds the session's
 * lifecycle: negotiation, rounds, backoff and the way out (lost, expired, terminal).
 * attachments.js holds what happens between ATTACHING and a loss: the transports' proofs
 * and the swaps while CONNECTED; ferry.js the app's API on top.
 */
export const IDLE = 0;
export const NEGOTIATING = 1;
export const ATTACHING = 2;
export const WAITING = 3;
export const CONNECTED = 4;

/** 128 random bits, base64url: 22 characters. */
const newCid = () => btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16)))).slice(0, 22).replace(/\+/g, '-').replace(/\//g, '_');

/**
 * The session's lifecycle. Members ending in `_` are shared with the layers above
 * (attachments.js, ferry.js); the build shortens their names.
 */
export class Connection extends Emitter {
  /** @type {import('./index.js').OnlineTarget | null} */
  #online;
  #onOnline = () => this.#retryNow();
  #round = 0; // bumped by each round and by #stop: results of an older round are dropped
  /** @type {unknown} */
  #roundTimer = null; // WAITING: the next round
  /** @type {TransportName | null} */
  #announced = null; // the transport of the last `transport` event
  #everConnected = false;
  // The client identity (PROTOCOL.md §3, "Upstream across sessions"): drawn once, kept in
  // memory with the upstream queue, so the server's dedupe outlives the session (4005).
  cid_ = newCid();
  /** @type {string | null} */
  sid_ = null;

  /** @type {State} */
  #state = 'connecting';
  /** @type {IDLE | NEGOTIATING | ATTACHING | WAITING | CONNECTED} */
  phase_ = IDLE;
  /** @type {Map<string, import('./subscription.js').Subscription>} */
  subs_ = new Map();
  failedRounds_ = 0;
  /** @type {string | null} */
  credential_ = null;
  /** @type {string | null} */
  token_ = null;
  /** @type {Negotiated} */
  negotiated_ = null;
  /** @type {TransportName[]} */
  usable_ = []; // transports usable by both sides, in the app's order of preference
  renewed_ = false; // a new session replaced an expired one and nothing proved itself since
  serverDraining_ = false; // the last loss was a 4003: short backoff until connected again

  /**
   * @param {string} url
   * @param {import('./index.js').FerryOptions} [options]
   */
  constructor(url, options = {}) {
    const env = platform(options);
    super(env.setTimeout);
    const o = (this.o_ = withDefaults(options));
    this.env_ = env;
    this.log_ = logger(options.debug);
    this.random_ = options.random ?? Math.random;
    this.base_ = new URL(url, /** @type {any} */ (globalThis).location?.href).href.replace(/\/+$/, '');
    this.#online = 'online' in options ? options.online ?? null : typeof addEventListener === 'function' ? /** @type {any} */ (globalThis) : null;
    this.upstream_ = new Upstream(o, env, (n) => this.delay_(n), () => this.expired_(4005));
    if (o.autoConnect) queueMicrotask(() => this.#state === 'connecting' && this.phase_ === IDLE && this.connect());
  }

  /** @returns {State} */
  get state() { return this.#state; }

  /** The session id, once negotiated. */
  get sid() { return this.sid_; }

  connect() {
    if (this.phase_ !== IDLE) return;
    this.phase_ = NEGOTIATING;
    this.failedRounds_ = 0;
    this.#online?.addEventListener('online', this.#onOnline);
    this.setState_('connecting');
    this.#newRound();
  }

  close() {
    if (this.#state === 'disconnected') return;
    this.#stop(new FerryError('closed', 'client closed'));
    this.setState_('disconnected', { code: 1000, reason: 'client closed' });
  }

  /** The transport carrying the session (attachments.js). @returns {TransportName | null} */
  get transport() { return null; }

  /** The one place where `state` changes. @param {State} state @param {object} [extra] */
  setState_(state, extra) {
    if (state === this.#state) return;
    this.#state = state;
    this.emit_('state', { state, transport: this.transport, ...extra });
  }

  /** Records the transport chosen (tried or switched to) and tells the app why. @param {TransportName} to @param {string} reason */
  announce_(to, reason) {
    if (to === this.#announced) return;
    const from = this.#announced;
    this.#announced = to;
    this.emit_('transport', { from, to, reason });
  }

  /** @param {number} attempt */
  delay_(attempt) {
    const { min, max } = this.o_.backoff;
    // After a 4003 the server is restarting or draining to its peers: back within seconds.
    return fullJitter(attempt, min, this.serverDraining_ ? Math.min(max, min * 8) : max, this.random_);
  }

  /** @param {() => void} fn @param {number} ms */
  timer_(fn, ms) { return this.env_.setTimeout(fn, ms); }

  /**
   * A request to the server under base, with this client's token: a POST of `body` as JSON,
   * or a GET without one. Resolves with the JSON body (see http.js `call`).
   * @param {string} path @param {object} [body] @returns {Promise<any>}
   */
  request_(path, body) {
    return call(this.env_, this.base_ + path, this.token_, body, this.o_.requestTimeout);
  }

  /** A transport proved itself: the session is CONNECTED on it (the caller sets the state). @param {TransportName} name */
  connected_(name) {
    this.phase_ = CONNECTED;
    this.failedRounds_ = 0;
    this.renewed_ = this.serverDraining_ = false;
    this.#everConnected = true;
    this.o_.transportMemory?.set(this.base_, name);
  }

  // ---- rounds: NEGOTIATING → ATTACHING → CONNECTED, or WAITING ----------------------------

  /**
   * Negotiates, then walks the usable transports until one proves itself. Never rejects:
   * whatever throws in a round (a transport constructor, a token function) fails the round.
   */
  #newRound() {
    this.#roundOrThrow().catch((e) => {
      this.emit_('error', e instanceof FerryError ? e : new FerryError('network', String(e?.message ?? e)));
      this.retry_();
    });
  }

  async #roundOrThrow() {
    const round = ++this.#round;
    this.phase_ = NEGOTIATING;
    if (!this.env_.fetch) return this.terminate_('no-transport', 'no fetch on this platform');
    let n;
    try {
      n = await this.#negotiate();
    } catch (err) {
      const e = /** @type {FerryError} */ (err);
      if (round !== this.#round) return;
      this.emit_('error', e);
      if (e.code === 4005 && this.credential_) {
        this.credential_ = null;
        return this.#newRound();
      }
      if (typeof e.code === 'number' && !shouldReconnect(e.code)) return this.terminate_(e.code, e.reason);
      if (e.code === 4029) this.failedRounds_ = Math.max(this.failedRounds_, 4);
      return this.retry_();
    }
    if (round !== this.#round) return;
    const env = /** @type {any} */ (this.env_);
    const list = (this.usable_ = this.o_.transports.filter(
      (t) => transports[t] && env[transports[t].needs_] && n.transports?.includes(t),
    ));
    if (!list.length) return this.terminate_('no-transport', 'no transport usable by both sides');
    // Start where the last client of this origin succeeded; the upgrade probe moves up later.
    // Benched transports go last (all of them benched: the list as it is).
    const benched = (/** @type {TransportName} */ t) => this.benched_(t);
    const order = [...list.filter((t) => !benched(t)), ...list.filter(benched)];
    const mem = this.o_.transportMemory?.get(this.base_);
    this.phase_ = ATTACHING;
    if (mem && mem !== order[0] && order.includes(mem) && !benched(mem)) {
      this.walk_([mem, ...order.filter((t) => t !== mem)], 'remembered');
    } else {
      this.walk_(order, benched(list[0]) ? 'benched' : this.#everConnected ? 'reconnect' : 'connect');
    }
  }

  /** @returns {Promise<Negotiated>} */
  async #negotiate() {
    const { token } = this.o_;
    this.token_ = typeof token === 'function' ? await token() : token ?? null;
    const n = await this.request_('/negotiate', { session: this.credential_ ?? undefined, cid: this.cid_ });
    // A new session: the numbering goes on under the same cid, and what is unacked goes again
    // with the seq it had, which the server's dedupe (keyed by the cid) recognises.
    if (this.sid_ && n.sid !== this.sid_) this.upstream_.renewed_();
    this.sid_ = n.sid;
    this.credential_ = n.session;
    this.negotiated_ = n;
    return n;
  }

  /** WAITING: the next round after a backoff (the whole transport list failed, or the session dropped). */
  retry_() {
    this.reset_();
    this.phase_ = WAITING;
    const ms = this.delay_(this.failedRounds_++);
    this.log_('retry in', Math.round(ms), 'ms');
    this.#roundTimer = this.timer_(() => {
      this.#roundTimer = null;
      this.#newRound();
    }, ms);
  }

  /** The platform went online: a round now instead of at the end of the backoff. */
  #retryNow() {
    if (this.phase_ !== WAITING) return;
    this.env_.clearTimeout(this.#roundTimer);
    this.#roundTimer = null;
    this.failedRounds_ = 0;
    this.#newRound();
  }

  /** The session's transport broke (not by a terminal code): resume on a new attachment. @param {number} code @param {string} reason */
  lost_(code, reason) {
    this.reset_();
    this.setState_('reconnecting', { code, reason });
    // A server going down wants its clients back soon, just not all at the same instant.
    this.serverDraining_ = code === 4003;
    if (code === 4029) this.failedRounds_ = Math.max(this.failedRounds_, 4);
    this.retry_();
  }

  /**
   * 4005: the session is gone; a new one keeps the positions and resends what is unacked.
   * 4006: the token expired; negotiating again (with a fresh token from the `token` option)
   * resumes the same session.
   * @param {4005 | 4006} code
   */
  expired_(code) {
    if (this.phase_ === IDLE) return; // a POST that ends after close()
    if (code === 4005) this.credential_ = null;
    this.reset_();
    if (this.#state === 'connected') {
      this.setState_('reconnecting', { code, reason: code === 4005 ? 'session expired' : 'token expired' });
    }
    // Expiring again before anything proved itself is a server that refuses us: back off.
    if (this.renewed_) return this.retry_();
    this.renewed_ = true;
    this.#newRound();
  }

  /** IDLE for good: a terminal code. @param {number | import('./index.js').ClientErrorCode} code @param {string} reason */
  terminate_(code, reason) {
    const err = new FerryError(code, reason);
    this.#stop(err);
    this.emit_('error', err);
    this.setState_('disconnected', { code, reason });
  }

  /** @param {FerryError} err what pending sends and publishes reject with */
  #stop(err) {
    this.phase_ = IDLE;
    this.#round++;
    this.reset_();
    this.#online?.removeEventListener('online', this.#onOnline);
    this.upstream_.fail_(err);
  }

  /** Drops every attachment and timer of the connection (not the session or its queue). */
  reset_() {
    this.env_.clearTimeout(this.#roundTimer);
    this.#roundTimer = null;
    this.detach_();
  }

  // What the layer above (attachments.js) provides.

  /** ATTACHING: try the transports of the list in turn. @param {TransportName[]} list @param {string} reason */
  walk_(list, reason) {}

  /** Drops the attachments and what depends on them. */
  detach_() {}

  /** Whether a transport kept failing (rounds try it last). @param {TransportName} name @returns {boolean} */
  benched_(name) { return false; }
}
