import { shouldReconnect } from './codes.js';
import { FerryError } from './errors.js';
import { Emitter } from './emitter.js';
import { fullJitter, equalJitter } from './backoff.js';
import { Memory } from './memory.js';
import { Detector } from './detector.js';
import { Upstream } from './upstream.js';
import { Subscription } from './subscription.js';
import { payload, data } from './codec.js';
import { transports } from './transports/index.js';
import { call, auth } from './transports/http.js';

const g = globalThis;

// Every default in one place; see index.d.ts for what each option means.
const DEFAULTS = {
  transports: ['websocket', 'sse', 'longpoll'],
  token: null,
  proofTimeout: 3000,
  requestTimeout: 15000,
  backoff: { min: 250, max: 15000 },
  upgradeProbe: { min: 5000, max: 300000 },
  maxQueue: 1000,
  sendTimeout: 30000,
  rememberTransport: 600000,
  buffering: { slack: 2000, pings: 3, ratio: 0.25 },
  pollHold: undefined,
  debug: false,
  autoConnect: true,
};

/**
 * The platform as the client uses it: injected or the globals.
 * @typedef {{
 *   fetch: import('./index.js').FetchLike, setTimeout(fn: () => void, ms: number): unknown,
 *   clearTimeout(id: unknown): void, now(): number,
 *   WebSocket: import('./index.js').WebSocketConstructor, EventSource: import('./index.js').EventSourceConstructor
 * }} Env
 */

/** Reads the platform's localStorage, which throws in sandboxed frames and some privacy modes. */
function localStorage() {
  try { return g.localStorage ?? null; } catch { return null; }
}

/**
 * A Ferry client: one session with the server, carried by the best transport that proves
 * itself, moving between transports (down when a proxy starts to buffer, up when a background
 * probe proves a better one) without losing or repeating a message.
 *
 * An attachment `a` is one transport connection of the session. At most two exist: `_cur`,
 * the one that proved itself and carries the session, and `_next`, one being proved (the
 * walk down the transport list while connecting, or a make-before-break swap while connected).
 * Every transport callback names its attachment, and callbacks of an attachment that is
 * neither of the two (replaced, dropped) are ignored.
 */
export class Ferry extends Emitter {
  /**
   * @param {string} url
   * @param {import('./index.js').FerryOptions} [options]
   */
  constructor(url, options = {}) {
    const { fetch = g.fetch, setTimeout: st = g.setTimeout, clearTimeout: ct = g.clearTimeout } = options;
    // Platform functions are called as plain functions: a browser's window.fetch or
    // setTimeout called as a method of another object throws "Illegal invocation".
    const later = (f, ms) => st(f, ms);
    super(later);
    const o = { ...DEFAULTS, ...options };
    for (const k of ['backoff', 'upgradeProbe']) o[k] = { ...DEFAULTS[k], ...options[k] };
    if (o.buffering) o.buffering = { ...DEFAULTS.buffering, ...o.buffering };
    this._o = o;
    /** @type {Env} */
    this._env = {
      fetch: fetch && ((u, i) => fetch(u, i)),
      setTimeout: later,
      clearTimeout: (id) => id != null && ct(id),
      now: options.now ?? Date.now,
      WebSocket: 'WebSocket' in options ? options.WebSocket : g.WebSocket,
      EventSource: 'EventSource' in options ? options.EventSource : g.EventSource,
    };
    this._log = o.debug === true ? (...a) => console.debug('[ferry]', ...a) : o.debug || (() => {});
    this._random = o.random ?? Math.random;
    this._base = new URL(url, g.location?.href).href.replace(/\/+$/, '');
    this._mem = new Memory(
      `ferry:transport:${new URL(this._base).origin}`,
      o.rememberTransport,
      'storage' in options ? options.storage : localStorage(),
      this._env.now,
    );
    /** @type {import('./index.js').OnlineTarget | null} */
    this._online = 'online' in options ? options.online : typeof g.addEventListener === 'function' ? g : null;
    this._onOnline = () => this._retryNow();
    /** @type {Map<string, Subscription>} */
    this._subs = new Map();
    this._up = new Upstream(o, this._env, (n) => this._delay(n), () => this._expired());

    /** @type {import('./index.js').State} */
    this._state = 'connecting';
    this._running = false;
    this._gen = 0; // bumped by each round and by stop: results of an older round are dropped
    this._tid = 0; // attachment ids, for the debug log
    this._cur = null;
    this._next = null;
    this._det = null;
    this._wait = null; // timer of the next connection round
    this._probeTimer = null;
    this._probes = 0; // upgrade probes failed in a row
    this._attempt = 0; // connection rounds failed in a row
    this._tr = null; // the transport chosen last, for `transport` events
    this._cred = null; // the session credential
    this._sid = null;
    this._n = null; // the last negotiate response
    this._list = []; // usable transports, in the app's order of preference
    this._renewed = false; // a new session replaced an expired one and nothing proved itself since
    this._shutdown = false; // the last loss was a 4003: short backoff until connected again
    this._ever = false; // connected once: later losses are 'reconnecting'
    this._dirty = false; // a subscription sync is queued for the end of this tick
    /** @type {Set<string>} */
    this._benched = new Set(); // transports that kept failing: rounds skip them (see _judge)
    /** @type {Map<string, string>} */
    this._brokeAt = new Map(); // transport → the cursor at its last loss
    if (o.autoConnect) queueMicrotask(() => this._state === 'connecting' && !this._running && this.connect());
  }

  /** @returns {'connecting'|'connected'|'reconnecting'|'disconnected'} */
  get state() { return this._state; }

  /** The transport carrying the session, or null while not connected. */
  get transport() { return (this._state === 'connected' && this._cur?.name) || null; }

  /** The session id, once negotiated. */
  get sid() { return this._sid; }

  connect() {
    if (this._running) return;
    this._running = true;
    this._attempt = 0;
    this._online?.addEventListener('online', this._onOnline);
    this._setState('connecting');
    this._round();
  }

  /**
   * Negotiates, then walks the usable transports until one proves itself. Never rejects:
   * whatever throws in a round (a transport constructor, a token function) fails the round.
   */
  _round() {
    return this._roundOrThrow().catch((e) => {
      this._emit('error', e instanceof FerryError ? e : new FerryError('network', String(e?.message ?? e)));
      this._retry();
    });
  }

  close() {
    if (this._state === 'disconnected') return;
    this._stop(new FerryError('closed', 'client closed'));
    this._setState('disconnected', { code: 1000, reason: 'client closed' });
  }

  /**
   * @param {string} channel
   * @param {(data: unknown, meta: import('./index.js').MessageMeta) => void} [onMessage]
   * @param {import('./index.js').SubscribeOptions} [options]
   */
  subscribe(channel, onMessage, { since } = {}) {
    if (this._subs.has(channel)) throw new FerryError('already-subscribed', `already subscribed to ${channel}`);
    const max = this._n?.limits?.maxChannels;
    if (max && this._subs.size >= max) throw new FerryError(4100, `at most ${max} channels per session`);
    const sub = new Subscription(this, channel, onMessage, since);
    this._subs.set(channel, sub);
    this._changed();
    return sub;
  }

  /** GET {base}/api/presence for a channel, as this session. */
  async _presence(channel) {
    if (!this._cred) throw new FerryError('closed', 'no session yet: wait for the connected state');
    const body = await call(this._env, `${this._base}/api/presence?${new URLSearchParams({ channel, session: this._cred })}`, {
      headers: { ...auth(this._token) },
    }, this._o.requestTimeout);
    return body?.members ?? [];
  }

  /** The active subscription to a channel, if any. */
  subscription(channel) { return this._subs.get(channel); }

  publish(channel, value) { return this._push({ t: 'pub', ch: channel, ...payload(value) }); }

  send(value) { return this._push({ t: 'send', ...payload(value) }); }

  _push(frame) {
    if (this._state === 'disconnected') return Promise.reject(new FerryError('closed', 'client is closed'));
    return this._up.push(frame);
  }

  _unsubscribe(sub) {
    if (this._subs.get(sub.channel) !== sub) return;
    this._subs.delete(sub.channel);
    this._changed();
  }

  // ---- state ------------------------------------------------------------------------------

  /** The one place where the state changes. */
  _setState(state, extra) {
    if (state === this._state) return;
    this._state = state;
    this._log('state', state, extra ?? '');
    this._emit('state', { state, transport: this.transport, ...extra });
  }

  /** Records the transport chosen (tried or switched to) and tells the app why. */
  _switch(to, reason) {
    if (to === this._tr) return;
    const from = this._tr;
    this._tr = to;
    this._log('transport', from, '→', to, reason);
    this._emit('transport', { from, to, reason });
  }

  _delay(attempt) {
    const { min, max } = this._o.backoff;
    // After a 4003 the server is restarting or draining to its peers: back within seconds.
    return fullJitter(attempt, min, this._shutdown ? Math.min(max, min * 8) : max, this._random);
  }

  _timer(fn, ms) { return this._env.setTimeout(fn, ms); }

  // ---- connection rounds ------------------------------------------------------------------

  async _roundOrThrow() {
    const gen = ++this._gen;
    if (!this._env.fetch) return this._terminate('no-transport', 'no fetch on this platform');
    let n;
    try {
      n = await this._negotiate();
    } catch (e) {
      if (gen !== this._gen) return;
      this._emit('error', e);
      if (e.code === 4005 && this._cred) {
        this._cred = null;
        return this._round();
      }
      if (typeof e.code === 'number' && !shouldReconnect(e.code)) return this._terminate(e.code, e.reason);
      if (e.code === 4029) this._attempt = Math.max(this._attempt, 4);
      return this._retry();
    }
    if (gen !== this._gen) return;
    const list = (this._list = this._o.transports.filter(
      (t) => transports[t] && this._env[transports[t].needs] && n.transports?.includes(t),
    ));
    if (!list.length) return this._terminate('no-transport', 'no transport usable by both sides');
    // Start where the last client of this origin succeeded; the upgrade probe moves up later.
    // Benched transports go last (all of them benched: the list as it is).
    const order = [...list.filter((t) => !this._benched.has(t)), ...list.filter((t) => this._benched.has(t))];
    const mem = this._mem.get();
    if (mem && mem !== order[0] && order.includes(mem) && !this._benched.has(mem)) {
      this._walk([mem, ...order.filter((t) => t !== mem)], 'remembered');
    } else {
      this._walk(order, this._benched.has(list[0]) ? 'benched' : this._ever ? 'reconnect' : 'connect');
    }
  }

  /** @param {string[]} list @param {string} reason */
  _walk([first, ...rest], reason) {
    this._switch(first, reason);
    this._attach(first, reason, rest, 'walk');
  }

  async _negotiate() {
    const o = this._o;
    const token = (this._token = typeof o.token === 'function' ? await o.token() : o.token);
    const n = await call(this._env, `${this._base}/negotiate`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...auth(token) },
      body: JSON.stringify(this._cred ? { session: this._cred } : {}),
    }, o.requestTimeout);
    // A new session numbers its upstream from 1 again; what is unacked goes again under it.
    if (this._sid && n.sid !== this._sid) this._up.renumber();
    this._sid = n.sid;
    this._cred = n.session;
    this._n = n;
    return n;
  }

  /** Schedules the next round after a backoff: the whole transport list failed, or the session dropped. */
  _retry() {
    this._reset();
    const ms = this._delay(this._attempt++);
    this._log('retry in', Math.round(ms), 'ms');
    this._wait = this._timer(() => {
      this._wait = null;
      this._round();
    }, ms);
  }

  _retryNow() {
    if (this._wait === null) return;
    this._env.clearTimeout(this._wait);
    this._wait = null;
    this._attempt = 0;
    this._round();
  }

  /** The session's transport broke (not by a terminal code): resume on a new attachment. */
  _lost(code, reason) {
    this._reset();
    this._setState('reconnecting', { code, reason });
    // A server going down wants its clients back soon, just not all at the same instant.
    this._shutdown = code === 4003;
    if (code === 4029) this._attempt = Math.max(this._attempt, 4);
    this._retry();
  }

  /**
   * 4005: the session is gone; a new one keeps the positions and resends what is unacked.
   * 4006: the token expired; negotiating again (with a fresh token from the `token` option)
   * resumes the same session.
   * @param {number} [code]
   */
  _expired(code = 4005) {
    if (code === 4005) this._cred = null;
    this._reset();
    if (this._state === 'connected') {
      this._setState('reconnecting', { code, reason: code === 4005 ? 'session expired' : 'token expired' });
    }
    // Expiring again before anything proved itself is a server that refuses us: back off.
    if (this._renewed) return this._retry();
    this._renewed = true;
    this._round();
  }

  _terminate(code, reason) {
    const err = new FerryError(code, reason);
    this._stop(err);
    this._emit('error', err);
    this._setState('disconnected', { code, reason });
  }

  _stop(err) {
    this._running = false;
    this._gen++;
    this._reset();
    this._online?.removeEventListener('online', this._onOnline);
    this._up.fail(err);
  }

  /** Drops every attachment and timer of the connection (not the session or its queue). */
  _reset() {
    if (this._next) this._drop(this._next);
    if (this._cur) this._drop(this._cur);
    for (const t of ['_wait', '_probeTimer']) {
      this._env.clearTimeout(this[t]);
      this[t] = null;
    }
    this._up.use(null);
    for (const sub of this._subs.values()) sub.state = 'subscribing';
  }

  // ---- attachments ------------------------------------------------------------------------

  /**
   * Opens an attachment and starts its proof. kind: 'walk' (connecting: on failure try
   * `rest` at once), 'buffering' (a swap down: on failure try `rest`), 'upgrade',
   * 'resubscribe' or 'resume' (swaps with no alternative).
   */
  _attach(name, reason, rest, kind) {
    if (this._next) this._drop(this._next);
    const o = this._o;
    const n = this._n;
    const a = { id: ++this._tid, name, reason, rest, kind, chans: new Set(this._subs.keys()), dead: false };
    this._log('attach', a.id, name, kind);
    a.t = transports[name].create({
      ...this._env,
      base: this._base,
      session: this._cred,
      token: this._token,
      hold: o.pollHold,
      holdMs: this._hold(),
      timeout: o.requestTimeout,
      cursor: () => this._cursor(a.chans),
      // Orders attachments at the server (a late request can't take over from a newer
      // one) and tells its metrics what this one replaces and why.
      att: a.id,
      from: this._cur && this._cur.name !== name ? this._cur.name : null,
      reason: this._cur && this._cur.name !== name ? reason : null,
      retry: (i) => this._delay(i),
      replaced: () => !(a === this._next || (a === this._cur && !this._next)),
      onFrame: (f) => this._frame(a, f),
      onClose: (code, why) => this._closed(a, code, why),
    });
    a.timer = this._timer(() => this._failed(a, 'proof-timeout'), o.proofTimeout);
    this._next = a;
    try {
      a.t.open();
    } catch (e) {
      // A constructor that throws (a ws:// URL from an https:// page, a CSP connect-src, a
      // malformed URL) is a failed attempt like any other: the next transport goes at once.
      this._failed(a, `${name} threw ${e?.name ?? 'Error'}: ${e?.message ?? e}`);
    }
  }

  _hold() {
    const n = this._n?.pollHoldMs || 25000;
    return this._o.pollHold ? Math.min(this._o.pollHold, n) : n;
  }

  _cursor(chans) {
    let c = '';
    for (const ch of chans) {
      const p = this._subs.get(ch)?.position;
      c += `${c ? ',' : ''}${ch}=${p ? `${p.epoch}.${p.offset}` : ''}`;
    }
    return c;
  }

  _drop(a) {
    this._env.clearTimeout(a.timer);
    if (a === this._next) this._next = null;
    if (a === this._cur) {
      this._cur = null;
      this._det?.stop();
      this._det = null;
    }
    a.t.close();
  }

  _frame(a, f) {
    if (a !== this._cur && a !== this._next) return;
    if (f.t === 'close') return this._closed(a, f.code, f.reason || `close-${f.code}`);
    if (a !== this._cur) {
      if (f.t === 'hello') this._proof(a, f);
      return;
    }
    if (f.t === 'ping') {
      a.pinged = true;
      this._det?.ping(f.ts);
    } else this._det?.alive();
    if (f.t === 'ack') return this._up.ack(f);
    const sub = this._subs.get(f.ch);
    if (!sub) return;
    if (f.t === 'unsub') {
      this._subs.delete(f.ch);
      a.chans.delete(f.ch);
      return sub._end(f.code, f.reason ?? '');
    }
    if (f.t === 'msg' || f.t === 'sub' || f.t === 'reset') {
      const d = f.t === 'msg' ? data(f) : undefined;
      if (sub._apply(f, d)) this._emit('message', { channel: f.ch, data: d, epoch: f.ep, offset: f.off });
      if (a.waitSync && !this._unconfirmed(a)) {
        a.waitSync = false;
        this._sync();
      }
    }
    // Unknown frame types are ignored (PROTOCOL.md §3), which leaves room for presence.
  }

  /** The hello of `a` arrived: it carries the session from now on. */
  _proof(a, hello) {
    this._env.clearTimeout(a.timer);
    const old = this._cur;
    this._next = null;
    if (old) this._drop(old);
    this._cur = a;
    this._attempt = 0;
    this._renewed = false;
    this._shutdown = false;
    this._ever = true;
    if (a.kind === 'upgrade') this._probes = 0;
    this._benched.delete(a.name);
    this._mem.set(a.name);
    this._switch(a.name, a.reason);
    this._det = this._detector(a, hello);
    this._setState('connected');
    this._up.use(a.t);
    this._sync();
    this._probe();
  }

  /** An attachment ended: by a close frame, a transport close, or a failed request. */
  _closed(a, code, why) {
    if (a !== this._cur && a !== this._next) return;
    // 1007/1002: the platform refused what the transport carried (bytes that aren't UTF-8, a
    // frame a proxy corrupted): another transport may carry it, so it is no reason to stop.
    const corrupt = code === 1007 || code === 1002;
    const terminal = !corrupt && !shouldReconnect(code);
    if (corrupt) this._judge(a, code);
    if (a === this._next) {
      this._drop(a);
      if (code === 4005 || code === 4006) return this._expired(code);
      if (terminal && code !== 4001) return this._terminate(code, why);
      return this._failed(a, why);
    }
    if (this._next && code !== 4005 && code !== 4006 && (code === 4001 || !terminal)) {
      // Usually our own swap superseded it; the swap decides what comes next.
      this._log('attachment', a.id, 'ended during a swap:', code, why);
      a.dead = true;
      this._det?.stop();
      this._det = null;
      this._up.use(null);
      return a.t.close();
    }
    this._drop(a);
    if (code === 4005 || code === 4006) return this._expired(code);
    // Nothing of ours replaced it: the session was taken over elsewhere.
    if (code === 4001) return this._terminate(4001, 'superseded by another attachment of the session');
    if (terminal) return this._terminate(code, why);
    if (!corrupt) this._judge(a, code);
    this._lost(code, why);
  }

  /**
   * A proved attachment broke, or one broke with 1007/1002. A transport that breaks with
   * 1007/1002, or a stream (WebSocket, SSE) that breaks twice in a row at the same position
   * with no heartbeat in between (the same message kills it at each replay), is benched: the client says so with an `error`
   * event and connection rounds try the other transports first. The background upgrade probe
   * still tries it after its backoff, from positions that have moved on meanwhile, and a
   * probe that proves it lifts the bench.
   */
  _judge(a, code) {
    const at = this._cursor(this._subs.keys());
    // A poll that a proxy cuts breaks without a ping too; only a stream can be killed by a frame.
    const again = !a.pinged && !transports[a.name].polled && this._brokeAt.get(a.name) === at;
    this._brokeAt.set(a.name, at);
    if (!again && code !== 1007 && code !== 1002) return;
    if (this._benched.has(a.name)) return;
    this._benched.add(a.name);
    const why = again ? 'failed twice at the same position' : `failed with ${code}`;
    this._log('benched', a.name, why);
    this._emit('error', new FerryError(code, `${a.name} ${why}: trying the other transports first`));
  }

  /** `a` (the attachment being proved) failed its proof. */
  _failed(a, why) {
    this._drop(a);
    this._log('attachment', a.id, a.name, 'failed:', why);
    if (a.rest.length) {
      const [next, ...rest] = a.rest;
      if (a.kind === 'walk') this._switch(next, why);
      return this._attach(next, a.kind === 'walk' ? why : a.reason, rest, a.kind);
    }
    if (a.kind === 'walk') return this._retry();
    if (a.kind === 'upgrade') this._probes++;
    const cur = this._cur;
    if (!cur.dead) {
      // A new cursor that can't attach would fail again at once: take the backoff path.
      if (a.kind === 'resubscribe') return this._lost(1006, why);
      this._sync();
      return this._probe();
    }
    // The swap superseded the attachment it was to replace, then failed: attach anew there.
    if (a.kind !== 'resume') return this._attach(cur.name, 'resume', [], 'resume');
    this._lost(1006, why);
  }

  _detector(a, hello) {
    const b = /** @type {Required<import('./index.js').BufferingOptions> | false} */ (this._o.buffering);
    const polled = transports[a.name].polled;
    const interval = polled ? this._hold() : hello.hb || this._n.heartbeatMs;
    if (!b || !interval) return null;
    return new Detector({ ...b, interval, clumps: !polled }, this._env, (why) => this._degrade(why));
  }

  /** The current stream is being buffered: move down one transport, make-before-break. */
  _degrade(why) {
    const cur = this._cur;
    const lower = this._list.slice(this._list.indexOf(cur.name) + 1);
    this._log('buffering:', why, lower.length ? `moving to ${lower[0]}` : 'nowhere to go');
    if (lower.length) return this._attach(lower[0], 'buffering', lower.slice(1), 'buffering');
    // With nothing below, a silent stream is most likely a dead one (a half-open TCP
    // connection can stay quiet for minutes): resume on a new attachment.
    if (why === 'late') {
      this._drop(cur);
      this._lost(4004, 'heartbeat timeout');
    }
  }

  /** While below the preferred transport, probe it in the background with a real attachment. */
  _probe() {
    const top = this._list[0];
    if (!this._cur || this._cur.name === top || this._next || this._probeTimer !== null) return;
    const { min, max } = this._o.upgradeProbe;
    this._probeTimer = this._timer(() => {
      this._probeTimer = null;
      if (this._cur && !this._next && this._cur.name !== top) this._attach(top, 'upgrade', [], 'upgrade');
    }, equalJitter(this._probes, min, max, this._random));
  }

  // ---- subscriptions ----------------------------------------------------------------------

  /** Subscriptions changed: bring the attachment up to date once this tick's changes are in. */
  _changed() {
    if (this._dirty) return;
    this._dirty = true;
    queueMicrotask(() => {
      this._dirty = false;
      this._sync();
    });
  }

  /** Whether a channel `a` carries still waits for the position its sub frame brings. */
  _unconfirmed(a) {
    for (const ch of a.chans) {
      const sub = this._subs.get(ch);
      if (sub && !sub.position) return true;
    }
    return false;
  }

  /**
   * Makes the current attachment carry exactly the subscribed channels: in band on a
   * WebSocket, by a new attachment with the new cursor elsewhere. Waits while a swap is being
   * proved; the proof calls it again.
   */
  _sync() {
    const a = this._cur;
    if (!a || this._next || a.dead) return;
    const add = [...this._subs.keys()].filter((ch) => !a.chans.has(ch));
    const del = [...a.chans].filter((ch) => !this._subs.has(ch));
    if (!add.length && !del.length) return;
    if (!transports[a.name].live) {
      // The new attachment starts from the positions held now. A channel whose sub frame
      // hasn't arrived yet has none, and "from now" would skip what came in between: wait.
      if (this._unconfirmed(a)) return void (a.waitSync = true);
      return this._attach(a.name, 'resubscribe', [], 'resubscribe');
    }
    for (const ch of del) a.chans.delete(ch);
    for (const ch of add) a.chans.add(ch);
    a.t.send([
      ...del.map((ch) => ({ t: 'unsub', ch })),
      ...add.map((ch) => {
        const p = this._subs.get(ch).position;
        return p ? { t: 'sub', ch, ep: p.epoch, off: p.offset } : { t: 'sub', ch };
      }),
    ]);
  }
}
