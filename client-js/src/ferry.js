import { shouldReconnect } from './codes.js';
import { FerryError } from './errors.js';
import { Emitter } from './emitter.js';
import { fullJitter, equalJitter } from './backoff.js';
import { memory } from './memory.js';
import { Detector } from './detector.js';
import { Upstream } from './upstream.js';
import { Subscription } from './subscription.js';
import { payload, data } from './codec.js';
import { transports } from './transports/index.js';
import { call, auth } from './transports/http.js';
import { withDefaults, platform, localStorage, logger } from './options.js';
import { Attachment, cursor, WALK, BUFFERING, UPGRADE, RESUBSCRIBE, RESUME } from './attachment.js';

/**
 * @typedef {import('./index.js').TransportName} TransportName
 * @typedef {import('./index.js').State} State
 * @typedef {import('./transports/index.js').Frame} Frame
 * @typedef {import('./attachment.js').Purpose} Purpose
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
 * close() or a terminal code goes to IDLE from anywhere. While CONNECTED, a second attachment
 * may be in proof (a swap: down when a proxy buffers, up when the background probe succeeds,
 * or the same transport with a new cursor); see Purpose.
 */
/** 128 random bits, base64url: 22 characters. */
const newCid = () => btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16)))).slice(0, 22).replace(/\+/g, '-').replace(/\//g, '_');

const IDLE = 0;
const NEGOTIATING = 1;
const ATTACHING = 2;
const WAITING = 3;
const CONNECTED = 4;

/**
 * A Ferry client: one session with the server, carried by the best transport that proves
 * itself, moving between transports (down when a proxy starts to buffer, up when a background
 * probe proves a better one) without losing or repeating a message.
 *
 * At most two attachments exist: #current, the one that proved itself and carries the
 * session, and #candidate, one being proved. Every transport callback names its attachment,
 * and callbacks of an attachment that is neither (replaced, dropped) are ignored.
 */
export class Ferry extends Emitter {
  #o;
  #env;
  #log;
  #random;
  #base;
  #memory;
  /** @type {import('./index.js').OnlineTarget | null} */
  #online;
  #onOnline = () => this.#retryNow();
  /** @type {Map<string, Subscription>} */
  #subs = new Map();
  #upstream;

  /** @type {State} */
  #state = 'connecting';
  /** @type {IDLE | NEGOTIATING | ATTACHING | WAITING | CONNECTED} */
  #phase = IDLE;
  #round = 0; // bumped by each round and by #stop: results of an older round are dropped
  #attachments = 0; // the id of the last attachment
  /** @type {Attachment | null} */
  #current = null;
  /** @type {Attachment | null} */
  #candidate = null;
  /** @type {Detector | null} */
  #detector = null;
  /** @type {unknown} */
  #roundTimer = null; // WAITING: the next round
  /** @type {unknown} */
  #probeTimer = null;
  #failedProbes = 0; // upgrade probes failed in a row
  #failedRounds = 0;
  /** @type {TransportName | null} */
  #announced = null; // the transport of the last `transport` event
  /** @type {string | null} */
  #credential = null;
  // The client identity (PROTOCOL.md §3, "Upstream across sessions"): drawn once, kept in
  // memory with the upstream queue, so the server's dedupe outlives the session (4005).
  #cid = newCid();
  /** @type {string | null} */
  #sid = null;
  /** @type {string | null} */
  #token = null;
  /** @type {Negotiated} */
  #negotiated = null;
  /** @type {TransportName[]} */
  #usable = []; // transports usable by both sides, in the app's order of preference
  #renewed = false; // a new session replaced an expired one and nothing proved itself since
  #serverDraining = false; // the last loss was a 4003: short backoff until connected again
  #everConnected = false;
  #syncQueued = false;
  /** @type {Set<string>} */
  #benched = new Set(); // transports that kept failing: rounds try them last (see #judge)
  /** @type {Map<string, string>} */
  #brokeAt = new Map(); // transport → the cursor at its last loss

  /**
   * @param {string} url
   * @param {import('./index.js').FerryOptions} [options]
   */
  constructor(url, options = {}) {
    const env = platform(options);
    super(env.setTimeout);
    const o = (this.#o = withDefaults(options));
    this.#env = env;
    this.#log = logger(options.debug);
    this.#random = options.random ?? Math.random;
    this.#base = new URL(url, /** @type {any} */ (globalThis).location?.href).href.replace(/\/+$/, '');
    this.#memory = memory(
      `ferry:transport:${new URL(this.#base).origin}`,
      o.rememberTransport,
      'storage' in options ? options.storage ?? null : localStorage(),
      env.now,
    );
    this.#online = 'online' in options ? options.online ?? null : typeof addEventListener === 'function' ? /** @type {any} */ (globalThis) : null;
    this.#upstream = new Upstream(o, env, (n) => this.#delay(n), () => this.#expired(4005));
    if (o.autoConnect) queueMicrotask(() => this.#state === 'connecting' && this.#phase === IDLE && this.connect());
  }

  /** @returns {State} */
  get state() { return this.#state; }

  /** The transport carrying the session, or null while not connected. */
  get transport() { return (this.#state === 'connected' && this.#current?.name) || null; }

  /** The session id, once negotiated. */
  get sid() { return this.#sid; }

  connect() {
    if (this.#phase !== IDLE) return;
    this.#phase = NEGOTIATING;
    this.#failedRounds = 0;
    this.#online?.addEventListener('online', this.#onOnline);
    this.#setState('connecting');
    this.#newRound();
  }

  close() {
    if (this.#state === 'disconnected') return;
    this.#stop(new FerryError('closed', 'client closed'));
    this.#setState('disconnected', { code: 1000, reason: 'client closed' });
  }

  /**
   * @param {string} channel
   * @param {(data: any, meta: import('./index.js').MessageMeta) => void} [onMessage]
   * @param {import('./index.js').SubscribeOptions} [options]
   */
  subscribe(channel, onMessage, { since } = {}) {
    if (this.#subs.has(channel)) throw new FerryError('already-subscribed', `already subscribed to ${channel}`);
    const max = this.#negotiated?.limits?.maxChannels;
    if (max && this.#subs.size >= max) throw new FerryError(4100, `at most ${max} channels per session`);
    const sub = new Subscription(this, channel, onMessage, since);
    this.#subs.set(channel, sub);
    this.#changed();
    return sub;
  }

  /** The active subscription to a channel, if any. @param {string} channel */
  subscription(channel) { return this.#subs.get(channel); }

  /** @param {string} channel @param {unknown} value @returns {Promise<import('./index.js').Position | null>} */
  publish(channel, value) { return this.#push({ t: 'pub', ch: channel, ...payload(value) }); }

  /** @param {unknown} value @returns {Promise<void>} */
  send(value) { return this.#push({ t: 'send', ...payload(value) }); }

  /** @param {Frame} frame */
  #push(frame) {
    if (this.#state === 'disconnected') return Promise.reject(new FerryError('closed', 'client is closed', 'not-sent'));
    return this.#upstream.push(frame);
  }

  /**
   * GET {base}/api/presence for a channel, as this session (Subscription.presence).
   * @param {string} channel @returns {Promise<import('./index.js').PresenceMember[]>}
   */
  async presence_(channel) {
    if (!this.#credential) throw new FerryError('closed', 'no session yet: wait for the connected state');
    const query = new URLSearchParams({ channel, session: this.#credential });
    const body = await call(this.#env, `${this.#base}/api/presence?${query}`, { headers: auth(this.#token) }, this.#o.requestTimeout);
    return body?.members ?? [];
  }

  /** Subscription.unsubscribe. @param {Subscription} sub */
  unsubscribe_(sub) {
    if (this.#subs.get(sub.channel) !== sub) return;
    this.#subs.delete(sub.channel);
    this.#changed();
  }

  // ---- state ------------------------------------------------------------------------------

  /** The one place where `state` changes. @param {State} state @param {object} [extra] */
  #setState(state, extra) {
    if (state === this.#state) return;
    this.#state = state;
    this.#log('state', state, extra ?? '');
    this.emit_('state', { state, transport: this.transport, ...extra });
  }

  /** Records the transport chosen (tried or switched to) and tells the app why. @param {TransportName} to @param {string} reason */
  #announce(to, reason) {
    if (to === this.#announced) return;
    const from = this.#announced;
    this.#announced = to;
    this.#log('transport', from, '→', to, reason);
    this.emit_('transport', { from, to, reason });
  }

  /** @param {number} attempt */
  #delay(attempt) {
    const { min, max } = this.#o.backoff;
    // After a 4003 the server is restarting or draining to its peers: back within seconds.
    return fullJitter(attempt, min, this.#serverDraining ? Math.min(max, min * 8) : max, this.#random);
  }

  /** @param {() => void} fn @param {number} ms */
  #timer(fn, ms) { return this.#env.setTimeout(fn, ms); }

  // ---- rounds: NEGOTIATING → ATTACHING → CONNECTED, or WAITING ----------------------------

  /**
   * Negotiates, then walks the usable transports until one proves itself. Never rejects:
   * whatever throws in a round (a transport constructor, a token function) fails the round.
   */
  #newRound() {
    this.#roundOrThrow().catch((e) => {
      this.emit_('error', e instanceof FerryError ? e : new FerryError('network', String(e?.message ?? e)));
      this.#retry();
    });
  }

  async #roundOrThrow() {
    const round = ++this.#round;
    this.#phase = NEGOTIATING;
    if (!this.#env.fetch) return this.#terminate('no-transport', 'no fetch on this platform');
    let n;
    try {
      n = await this.#negotiate();
    } catch (err) {
      const e = /** @type {FerryError} */ (err);
      if (round !== this.#round) return;
      this.emit_('error', e);
      if (e.code === 4005 && this.#credential) {
        this.#credential = null;
        return this.#newRound();
      }
      if (typeof e.code === 'number' && !shouldReconnect(e.code)) return this.#terminate(e.code, e.reason);
      if (e.code === 4029) this.#failedRounds = Math.max(this.#failedRounds, 4);
      return this.#retry();
    }
    if (round !== this.#round) return;
    const env = /** @type {any} */ (this.#env);
    const list = (this.#usable = this.#o.transports.filter(
      (t) => transports[t] && env[transports[t].needs] && n.transports?.includes(t),
    ));
    if (!list.length) return this.#terminate('no-transport', 'no transport usable by both sides');
    // Start where the last client of this origin succeeded; the upgrade probe moves up later.
    // Benched transports go last (all of them benched: the list as it is).
    const benched = (/** @type {TransportName} */ t) => this.#benched.has(t);
    const order = [...list.filter((t) => !benched(t)), ...list.filter(benched)];
    const mem = /** @type {TransportName | null} */ (this.#memory.get());
    this.#phase = ATTACHING;
    if (mem && mem !== order[0] && order.includes(mem) && !benched(mem)) {
      this.#walk([mem, ...order.filter((t) => t !== mem)], 'remembered');
    } else {
      this.#walk(order, benched(list[0]) ? 'benched' : this.#everConnected ? 'reconnect' : 'connect');
    }
  }

  /** @param {TransportName[]} list @param {string} reason */
  #walk([first, ...rest], reason) {
    this.#announce(first, reason);
    this.#attach(first, reason, rest, WALK);
  }

  /** @returns {Promise<Negotiated>} */
  async #negotiate() {
    const o = this.#o;
    const token = (this.#token = typeof o.token === 'function' ? await o.token() : o.token ?? null);
    const n = await call(this.#env, `${this.#base}/negotiate`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...auth(token) },
      body: JSON.stringify({ session: this.#credential ?? undefined, cid: this.#cid }),
    }, o.requestTimeout);
    // A new session: the numbering goes on under the same cid, and what is unacked goes again
    // with the seq it had, which the server's dedupe (keyed by the cid) recognises.
    if (this.#sid && n.sid !== this.#sid) this.#upstream.renewed();
    this.#sid = n.sid;
    this.#credential = n.session;
    this.#negotiated = n;
    return n;
  }

  /** WAITING: the next round after a backoff (the whole transport list failed, or the session dropped). */
  #retry() {
    this.#reset();
    this.#phase = WAITING;
    const ms = this.#delay(this.#failedRounds++);
    this.#log('retry in', Math.round(ms), 'ms');
    this.#roundTimer = this.#timer(() => {
      this.#roundTimer = null;
      this.#newRound();
    }, ms);
  }

  /** The platform went online: a round now instead of at the end of the backoff. */
  #retryNow() {
    if (this.#phase !== WAITING) return;
    this.#env.clearTimeout(this.#roundTimer);
    this.#roundTimer = null;
    this.#failedRounds = 0;
    this.#newRound();
  }

  /** The session's transport broke (not by a terminal code): resume on a new attachment. @param {number} code @param {string} reason */
  #lost(code, reason) {
    this.#reset();
    this.#setState('reconnecting', { code, reason });
    // A server going down wants its clients back soon, just not all at the same instant.
    this.#serverDraining = code === 4003;
    if (code === 4029) this.#failedRounds = Math.max(this.#failedRounds, 4);
    this.#retry();
  }

  /**
   * 4005: the session is gone; a new one keeps the positions and resends what is unacked.
   * 4006: the token expired; negotiating again (with a fresh token from the `token` option)
   * resumes the same session.
   * @param {4005 | 4006} code
   */
  #expired(code) {
    if (this.#phase === IDLE) return; // a POST that ends after close()
    if (code === 4005) this.#credential = null;
    this.#reset();
    if (this.#state === 'connected') {
      this.#setState('reconnecting', { code, reason: code === 4005 ? 'session expired' : 'token expired' });
    }
    // Expiring again before anything proved itself is a server that refuses us: back off.
    if (this.#renewed) return this.#retry();
    this.#renewed = true;
    this.#newRound();
  }

  /** IDLE for good: a terminal code. @param {number | import('./index.js').ClientErrorCode} code @param {string} reason */
  #terminate(code, reason) {
    const err = new FerryError(code, reason);
    this.#stop(err);
    this.emit_('error', err);
    this.#setState('disconnected', { code, reason });
  }

  /** @param {FerryError} err what pending sends and publishes reject with */
  #stop(err) {
    this.#phase = IDLE;
    this.#round++;
    this.#reset();
    this.#online?.removeEventListener('online', this.#onOnline);
    this.#upstream.fail(err);
  }

  /** Drops every attachment and timer of the connection (not the session or its queue). */
  #reset() {
    if (this.#candidate) this.#drop(this.#candidate);
    if (this.#current) this.#drop(this.#current);
    this.#env.clearTimeout(this.#roundTimer);
    this.#env.clearTimeout(this.#probeTimer);
    this.#roundTimer = this.#probeTimer = null;
    this.#upstream.use(null);
    for (const sub of this.#subs.values()) sub.state = 'subscribing';
  }

  // ---- attachments ------------------------------------------------------------------------

  /**
   * Opens an attachment as the candidate and starts its proof.
   * @param {TransportName} name @param {string} reason @param {TransportName[]} rest @param {Purpose} purpose
   */
  #attach(name, reason, rest, purpose) {
    if (this.#candidate) this.#drop(this.#candidate);
    const o = this.#o;
    const a = new Attachment(++this.#attachments, name, reason, rest, purpose, this.#subs.keys());
    const replacing = this.#current && this.#current.name !== name;
    this.#log('attach', a.id, name, purpose);
    this.#candidate = a;
    a.proofTimer = this.#timer(() => this.#failed(a, 'proof-timeout'), o.proofTimeout);
    try {
      (a.transport = transports[name].create({
        ...this.#env,
        base: this.#base,
        session: /** @type {string} */ (this.#credential),
        token: this.#token,
        hold: o.pollHold,
        holdMs: this.#hold(),
        timeout: o.requestTimeout,
        cursor: () => cursor(a.channels, this.#subs),
        // Orders attachments at the server (a late request can't take over from a newer
        // one) and tells its metrics what this one replaces and why.
        att: a.id,
        from: replacing ? this.#current?.name ?? null : null,
        reason: replacing ? reason : null,
        retry: (i) => this.#delay(i),
        replaced: () => !(a === this.#candidate || (a === this.#current && !this.#candidate)),
        onFrame: (f) => this.#frame(a, f),
        onClose: (code, why) => this.#closed(a, code, why),
      })).open();
    } catch (e) {
      // A constructor that throws (a ws:// URL from an https:// page, a CSP connect-src, a
      // malformed URL) is a failed attempt like any other: the next transport goes at once.
      const err = /** @type {any} */ (e);
      this.#failed(a, `${name} threw ${err?.name ?? 'Error'}: ${err?.message ?? err}`);
    }
  }

  /** The hold of a long-poll: the app's, at most the server's. */
  #hold() {
    const n = this.#negotiated?.pollHoldMs || 25000;
    return this.#o.pollHold ? Math.min(this.#o.pollHold, n) : n;
  }

  /** @param {Attachment} a */
  #drop(a) {
    this.#env.clearTimeout(a.proofTimer);
    if (a === this.#candidate) this.#candidate = null;
    if (a === this.#current) {
      this.#current = null;
      this.#stopDetector();
    }
    a.transport?.close();
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
      a.pinged = true;
      this.#detector?.ping(/** @type {number} */ (f.ts));
    } else this.#detector?.alive();
    if (f.t === 'ack') return this.#upstream.ack(f);
    const ch = /** @type {string} */ (f.ch);
    const sub = this.#subs.get(ch);
    if (!sub) return;
    if (f.t === 'unsub') {
      this.#subs.delete(ch);
      a.channels.delete(ch);
      return sub.end_(/** @type {number} */ (f.code), /** @type {string} */ (f.reason ?? ''));
    }
    if (f.t === 'msg' || f.t === 'sub' || f.t === 'reset') {
      const m = /** @type {Frame & {ep: string, off: number}} */ (f);
      const d = f.t === 'msg' ? data(f) : undefined;
      if (sub.apply_(m, d)) this.emit_('message', { channel: ch, data: d, epoch: m.ep, offset: m.off });
      if (a.syncWhenConfirmed && !a.unconfirmed(this.#subs)) {
        a.syncWhenConfirmed = false;
        this.#sync();
      }
    }
    // Unknown frame types are ignored (PROTOCOL.md §3), which leaves room for presence.
  }

  /** CONNECTED: the hello of `a` arrived, it carries the session from now on. @param {Attachment} a @param {Frame} hello */
  #proved(a, hello) {
    this.#env.clearTimeout(a.proofTimer);
    const old = this.#current;
    this.#candidate = null;
    if (old) this.#drop(old);
    this.#current = a;
    this.#phase = CONNECTED;
    this.#failedRounds = 0;
    this.#renewed = this.#serverDraining = false;
    this.#everConnected = true;
    if (a.purpose === UPGRADE) this.#failedProbes = 0;
    this.#benched.delete(a.name);
    this.#memory.set(a.name);
    this.#announce(a.name, a.reason);
    this.#detector = this.#newDetector(a, hello);
    this.#setState('connected');
    this.#upstream.use(a.transport);
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
    const terminal = !corrupt && !shouldReconnect(code);
    const expired = code === 4005 || code === 4006;
    if (corrupt) this.#judge(a, code);
    if (a === this.#candidate) {
      this.#drop(a);
      if (expired) return this.#expired(code);
      if (terminal && code !== 4001) return this.#terminate(code, why);
      return this.#failed(a, why);
    }
    if (this.#candidate && !expired && (code === 4001 || !terminal)) {
      // Usually our own swap superseded it; the swap decides what comes next.
      this.#log('attachment', a.id, 'ended during a swap:', code, why);
      a.ended = true;
      this.#stopDetector();
      this.#upstream.use(null);
      return a.transport?.close();
    }
    this.#drop(a);
    if (expired) return this.#expired(code);
    // Nothing of ours replaced it: the session was taken over elsewhere.
    if (code === 4001) return this.#terminate(4001, 'superseded by another attachment of the session');
    if (terminal) return this.#terminate(code, why);
    if (!corrupt) this.#judge(a, code);
    this.#lost(code, why);
  }

  /**
   * A proved attachment broke, or one broke with 1007/1002. A transport that breaks with
   * 1007/1002, or a stream (WebSocket, SSE) that breaks twice in a row at the same position
   * with no heartbeat in between (the same message kills it at each replay), is benched: the
   * client says so with an `error` event and connection rounds try the other transports
   * first. The background upgrade probe still tries it after its backoff, from positions that
   * have moved on meanwhile, and a probe that proves it lifts the bench.
   * @param {Attachment} a @param {number} code
   */
  #judge(a, code) {
    const at = cursor(this.#subs.keys(), this.#subs);
    // A poll that a proxy cuts breaks without a ping too; only a stream can be killed by a frame.
    const again = !a.pinged && !transports[a.name].polled && this.#brokeAt.get(a.name) === at;
    this.#brokeAt.set(a.name, at);
    if ((!again && code !== 1007 && code !== 1002) || this.#benched.has(a.name)) return;
    this.#benched.add(a.name);
    const why = again ? 'failed twice at the same position' : `failed with ${code}`;
    this.#log('benched', a.name, why);
    this.emit_('error', new FerryError(code, `${a.name} ${why}: trying the other transports first`));
  }

  /** The candidate `a` failed its proof: what follows depends on its purpose. @param {Attachment} a @param {string} why */
  #failed(a, why) {
    this.#drop(a);
    this.#log('attachment', a.id, a.name, 'failed:', why);
    const walking = a.purpose === WALK;
    if (a.rest.length) {
      const [next, ...rest] = a.rest;
      if (walking) this.#announce(next, why);
      return this.#attach(next, walking ? why : a.reason, rest, a.purpose);
    }
    if (walking) return this.#retry();
    if (a.purpose === UPGRADE) this.#failedProbes++;
    const cur = /** @type {Attachment} */ (this.#current);
    if (!cur.ended) {
      // A new cursor that can't attach would fail again at once: take the backoff path.
      if (a.purpose === RESUBSCRIBE) return this.#lost(1006, why);
      this.#sync();
      return this.#probe();
    }
    // The swap superseded the attachment it was to replace, then failed: attach anew there.
    if (a.purpose !== RESUME) return this.#attach(cur.name, RESUME, [], RESUME);
    this.#lost(1006, why);
  }

  // ---- moving between transports while CONNECTED -------------------------------------------

  /** @param {Attachment} a @param {Frame} hello */
  #newDetector(a, hello) {
    const b = this.#o.buffering;
    const polled = transports[a.name].polled;
    const interval = polled ? this.#hold() : hello.hb || this.#negotiated.heartbeatMs;
    if (!b || !interval) return null;
    return new Detector({ ...b, interval, clumps: !polled }, this.#env, (why) => this.#buffered(why));
  }

  /** The current stream is being buffered: move down one transport, make-before-break. @param {'late' | 'clumped'} why */
  #buffered(why) {
    const cur = /** @type {Attachment} */ (this.#current);
    const lower = this.#usable.slice(this.#usable.indexOf(cur.name) + 1);
    this.#log('buffering:', why, lower[0] ?? 'nowhere to go');
    if (lower.length) return this.#attach(lower[0], BUFFERING, lower.slice(1), BUFFERING);
    // With nothing below, a silent stream is most likely a dead one (a half-open TCP
    // connection can stay quiet for minutes): resume on a new attachment.
    if (why === 'late') {
      this.#drop(cur);
      this.#lost(4004, 'heartbeat timeout');
    }
  }

  /** While below the preferred transport, probe it in the background with a real attachment. */
  #probe() {
    const top = this.#usable[0];
    if (!this.#current || this.#current.name === top || this.#candidate || this.#probeTimer !== null) return;
    const { min, max } = this.#o.upgradeProbe;
    this.#probeTimer = this.#timer(() => {
      this.#probeTimer = null;
      if (this.#current && !this.#candidate && this.#current.name !== top) this.#attach(top, UPGRADE, [], UPGRADE);
    }, equalJitter(this.#failedProbes, min, max, this.#random));
  }

  // ---- subscriptions ----------------------------------------------------------------------

  /** Subscriptions changed: bring the attachment up to date once this tick's changes are in. */
  #changed() {
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
    if (!a || this.#candidate || a.ended) return;
    const add = [...this.#subs.keys()].filter((ch) => !a.channels.has(ch));
    const del = [...a.channels].filter((ch) => !this.#subs.has(ch));
    if (!add.length && !del.length) return;
    if (!transports[a.name].live) {
      // The new attachment starts from the positions held now. A channel whose sub frame
      // hasn't arrived yet has none, and "from now" would skip what came in between: wait.
      if (a.unconfirmed(this.#subs)) return void (a.syncWhenConfirmed = true);
      return this.#attach(a.name, RESUBSCRIBE, [], RESUBSCRIBE);
    }
    for (const ch of del) a.channels.delete(ch);
    for (const ch of add) a.channels.add(ch);
    /** @type {import('./transports/index.js').Transport} */ (a.transport).send([
      ...del.map((ch) => ({ t: 'unsub', ch })),
      ...add.map((ch) => {
        const p = /** @type {Subscription} */ (this.#subs.get(ch)).position;
        return p ? { t: 'sub', ch, ep: p.epoch, off: p.offset } : { t: 'sub', ch };
      }),
    ]);
  }
}
