// The client with one connection per browser (README, "One connection per browser"):
//
//   import { Ferry } from '@ferryrt/client/share';   // or '/ferry/share.js' from a Ferry server
//   const ferry = new Ferry(url, { share: true });
//
// A separate entry, so that apps that don't share pay nothing for it: it exports everything
// the base client does, with a Ferry that takes `share: true`. Built on its own (build.mjs),
// it imports the base from ./client.js beside it.
import { Ferry as Base } from './ferry.js';
import { FerryError } from './errors.js';
import { shouldReconnect } from './reconnect.js';

export * from './index.js';

/**
 * @typedef {import('./index.js').Position} Position
 * @typedef {import('./index.js').TransportName} TransportName
 * @typedef {import('./index.js').FerryOptions & { share?: boolean }} ShareOptions
 * @typedef {import('./transports/index.js').Frame} Frame
 * @typedef {[string, Position | null, boolean]} Want a channel a tab follows, from where, and
 *   whether it is fresh (never confirmed: it may have missed what the others got)
 * @typedef {{ sub: import('./subscription.js').Subscription, from: Position | null }} Carried
 */

const g = /** @type {any} */ (globalThis);

// The phases of connection.js that a shared tab uses (it never attaches itself).
const IDLE = 0;
const NEGOTIATING = 1;
const WAITING = 3;

/**
 * A Ferry that, with `share: true`, shares one session and one connection with the other
 * tabs of its origin that use the same URL and identity. Without Web Locks or
 * BroadcastChannel, or without `share`, it is the base client.
 */
export class Ferry extends Base {
  #options;
  /** @type {Share | null} */
  #share = null;
  /** @type {TransportName | null} the transport of the leading tab */
  #via = null;
  #changedQueued = false;

  /** @param {string} url @param {ShareOptions} [options] */
  constructor(url, options = {}) {
    super(url, options);
    this.#options = options;
  }

  /** @returns {TransportName | null} */
  get transport() { return super.transport ?? ((this.state === 'connected' && this.#via) || null); }

  /** With `share`: whether this tab leads the shared session or follows; 'off' without. */
  get shared() { return this.#share?.role ?? 'off'; }

  connect() {
    if (!this.#options.share || !g.navigator?.locks || !g.BroadcastChannel) return super.connect();
    if (this.phase_ !== IDLE) return;
    this.phase_ = NEGOTIATING;
    this.setState_('connecting');
    this.#join();
  }

  /** Joins the tabs that share a session: same origin, URL and identity. */
  async #join() {
    const token = this.#options.token;
    const t = typeof token === 'function' ? await token() : token ?? null;
    if (this.phase_ === IDLE) return;
    this.phase_ = WAITING;
    this.#share = new Share(this, this.#options, `ferry:${this.base_}:${subject(t)}`, (m) => this.#relayed(m));
    this.#share.token(t);
  }

  close() {
    this.#share?.close();
    super.close();
  }

  /** Subscriptions changed: tell the leading tab once this tick's changes are in. */
  changed_() {
    if (!this.#share) return super.changed_();
    if (this.#changedQueued) return;
    this.#changedQueued = true;
    queueMicrotask(() => {
      this.#changedQueued = false;
      this.#share?.changed();
    });
  }

  /** A state or transport event of the shared session, from the leading tab. @param {any} m */
  #relayed(m) {
    if (m.t === 'transport') return this.announce_(m.to, m.reason);
    this.sid_ = m.sid;
    this.credential_ = m.session;
    this.#via = m.transport;
    // A tab that joined after the leader's transport event learns the transport here.
    if (m.transport) this.announce_(m.transport, 'connect');
    const { state, code, reason } = m;
    this.setState_(state, code ? { code, reason } : undefined);
  }
}

/**
 * One session for the tabs of an origin.
 *
 * The tab holding the Web Lock `key` leads: it runs an ordinary, unshared Ferry (`inner`)
 * subscribed to the union of what the tabs follow, from the oldest position any of them
 * holds, and posts every frame it gets on the BroadcastChannel `key`. Each tab applies the
 * frames of its own subscriptions, dropping what is at or before its position, so a replay
 * from an older position repeats nothing in any tab. When the lock comes free (the leader
 * closed, crashed, froze) the next tab in the lock's queue leads, asks every tab where it
 * stands, and resumes from there.
 *
 * Upstream: every tab numbers its frames itself, under its own cid, as an unshared client
 * would; the leader only carries them, POSTing them to /send with a credential of the shared
 * session negotiated for that tab's cid. A frame's (cid, seq) is fixed before it leaves its
 * tab, so whichever leader carries it, and however often, the server's dedupe (keyed by the
 * credential's cid) processes it once. A leader that goes away fails the requests it had;
 * the tab resends them to the next one.
 */
class Share {
  #ferry;
  #options;
  #onRelay;
  #tab = Math.random().toString(36).slice(2);
  /** @type {BroadcastChannel} */
  #bc;
  #key;
  /** 'leader' | 'follower' | 'off' */
  role = /** @type {'leader' | 'follower' | 'off'} */ ('follower');
  #asks = 0;
  /** @type {Map<number, {resolve(acks: Frame[]): void, reject(e: FerryError): void}>} */
  #asked = new Map();
  /** @type {(() => void) | null} releases the lock */
  #release = null;
  #closed = false;
  /** @type {string | null} the newest token a tab has shown */
  #token = null;
  /** @type {(() => void) | null} releases this tab's own lock, held while it lives */
  #alive = null;
  /** @type {Array<[string, (e: any) => void]>} the window's listeners, removed by close */
  #listeners;

  // The leader's side.
  /** @type {Ferry | null} */
  #inner = null;
  /** @type {Map<string, Want[]>} tab → what it follows */
  #tabs = new Map();
  /** @type {Map<string, Carried>} */
  #carried = new Map();
  /** @type {Map<string, Promise<string>>} cid → a credential of the shared session for it */
  #creds = new Map();
  /** @type {string | null} the sid the credentials are of */
  #credSid = null;
  /** @type {AbortController | null} the leader's requests for the other tabs' locks */
  #watching = null;

  /**
   * @param {Ferry} ferry this tab's client @param {ShareOptions} options
   * @param {string} key the group: origin, URL and identity
   * @param {(m: any) => void} onRelay the shared session's state and transport events
   */
  constructor(ferry, options, key, onRelay) {
    this.#ferry = ferry;
    this.#options = options;
    this.#key = key;
    this.#onRelay = onRelay;
    this.#bc = new g.BroadcastChannel(key);
    this.#bc.onmessage = (/** @type {MessageEvent} */ e) => this.#on(e.data);
    // A tab going into the back-forward cache or frozen can't lead: it lets go, and asks
    // again when it is back. A tab that unloads ends for good.
    this.#listeners = [
      ['pagehide', (e) => (e.persisted ? this.#abdicate() : ferry.close())],
      ['freeze', () => this.#abdicate()],
      ['pageshow', () => this.#candidate()],
      ['resume', () => this.#candidate()],
    ];
    for (const [type, fn] of this.#listeners) g.addEventListener?.(type, fn);
    // Each tab holds a lock of its own while it lives; the leader asks for it too, and gets
    // it when the tab is gone, even if it crashed without a word.
    g.navigator.locks.request(`${key} ${this.#tab}`, () => new Promise((r) => (this.#alive = () => r(undefined))));
    this.#candidate();
    ferry.upstream_.use_(this.#relay());
    this.changed();
  }

  /** Queues for the lock; the callback runs when this tab leads. */
  #candidate() {
    if (this.#release || this.#closed) return;
    const queued = new AbortController();
    this.#release = () => queued.abort();
    g.navigator.locks.request(this.#key, { signal: queued.signal }, () => new Promise((release) => {
      this.#release = () => release(undefined);
      this.#lead();
    })).catch(() => {});
  }

  /** Stops leading (and stops waiting to lead): another tab takes over at once. */
  #abdicate() {
    this.#watching?.abort();
    this.#inner?.off();
    this.#inner?.close();
    this.#inner = null;
    this.#carried.clear();
    this.#tabs.clear();
    this.#release?.();
    this.#release = null;
    if (this.role === 'leader') this.role = 'follower';
  }

  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#send({ t: 'bye' });
    this.#abdicate();
    this.#alive?.();
    this.role = 'off';
    this.#bc.close();
    for (const [type, fn] of this.#listeners) g.removeEventListener?.(type, fn);
    for (const p of this.#asked.values()) p.reject(new FerryError('closed', 'client closed'));
  }

  /** Posts to the other tabs, and to this one's leader side when it leads. @param {any} m */
  #send(m) {
    m.tab = this.#tab;
    this.#bc.postMessage(m);
    if (this.role === 'leader') this.#lead_(m);
  }

  /** What this tab follows, for the leader. */
  #wants() {
    return [...this.#ferry.subs_.values()].map((s) => /** @type {Want} */ ([s.channel, s.position, s.state !== 'subscribed']));
  }

  /** The subscriptions of this tab changed. */
  changed() { this.#send({ t: 'subs', subs: this.#wants() }); }

  /** A new token from this tab's app (its token function). @param {string | null} token */
  token(token) { if (token) this.#send({ t: 'token', token }); }

  /** Upstream: frames go to the leader, acks come back from it. */
  #relay() {
    return /** @type {import('./transports/index.js').Transport} */ (/** @type {unknown} */ ({
      http_: true,
      /** @param {Frame[]} frames */
      send_: (frames) => new Promise((resolve, reject) => {
        const id = ++this.#asks;
        this.#asked.set(id, { resolve, reject });
        this.#send({ t: 'up', id, cid: this.#ferry.cid_, frames });
      }),
    }));
  }

  /** A message from another tab (or this one's leader side). @param {any} m */
  #on(m) {
    if (this.role === 'leader') this.#lead_(m);
    if (m.to && m.to !== this.#tab) return;
    if (m.t === 'lead') {
      // A new leader: what the old one carried for us goes again, to it.
      for (const p of this.#asked.values()) p.reject(new FerryError('network', 'the leading tab changed'));
      this.#asked.clear();
      if (m.tab !== this.#tab) this.role = 'follower';
      this.changed();
    } else if (m.t === 'f') this.#ferry.route_(m.f);
    else if (m.t === 'state' || m.t === 'transport') {
      this.#onRelay(m);
      if (m.code === 4006 && typeof this.#options.token === 'function') Promise.resolve(this.#options.token()).then((t) => this.token(t), () => {});
    } else if (m.t === 'acks') {
      const p = this.#asked.get(m.id);
      this.#asked.delete(m.id);
      if (m.err) p?.reject(new FerryError(m.err.code, m.err.reason));
      else p?.resolve(m.acks);
    }
  }

  // ---- the leader ------------------------------------------------------------------------

  #lead() {
    this.role = 'leader';
    this.#watching = new AbortController();
    const inner = (this.#inner = new Ferry(this.#ferry.base_, {
      ...this.#options,
      share: false,
      token: async () => {
        const t = this.#options.token;
        return newest(typeof t === 'function' ? await t() : t ?? null, this.#token);
      },
    }));
    // It resumes the shared session. Its attachments must outrank the last leader's at the
    // server (`att`): numbered from the clock, in thousandths of a ms, they do unless the
    // last leader made 1,000 attachments per ms.
    inner.credential_ = this.#ferry.credential_;
    inner.attachments_ = inner.env_.now() * 1000;
    const state = () => ({ t: 'state', state: inner.state, transport: inner.transport, sid: inner.sid, session: inner.credential_ });
    inner.on('state', (/** @type {any} */ e) => this.#post({ ...state(), ...e }));
    inner.on('transport', (/** @type {any} */ e) => this.#post({ ...e, t: 'transport' }));
    this.#state = () => this.#post(state());
    this.#post({ t: 'lead' });
  }

  /** @type {() => void} tells the tabs where the shared session stands */
  #state = () => {};

  /** Posts to every tab, this one included. @param {any} m */
  #post(m) {
    m.tab = this.#tab;
    this.#bc.postMessage(m);
    this.#on(m);
  }

  /** The leader's side of a message. @param {any} m */
  #lead_(m) {
    const inner = this.#inner;
    if (!inner || m.to) return;
    if (m.t === 'token') this.#token = newest(m.token, this.#token);
    else if (m.t === 'subs' || m.t === 'bye') {
      const had = new Set((this.#tabs.get(m.tab) ?? []).map((w) => w[0]));
      if (m.t === 'subs' && !this.#tabs.has(m.tab) && m.tab !== this.#tab) {
        g.navigator.locks.request(`${this.#key} ${m.tab}`, { signal: this.#watching?.signal }, () => this.#lead_({ t: 'bye', tab: m.tab })).catch(() => {});
      }
      if (m.t === 'bye') this.#tabs.delete(m.tab);
      else this.#tabs.set(m.tab, m.subs);
      if (m.t === 'subs') {
        this.#state();
        for (const w of /** @type {Want[]} */ (m.subs)) this.#want(m.tab, w, had.has(w[0]));
      }
      this.#drop();
    } else if (m.t === 'up') {
      this.#forward(m.cid, m.frames).then(
        (acks) => this.#post({ t: 'acks', to: m.tab, id: m.id, acks }),
        (e) => {
          // A session that expired here is the leader's to renew: the tab just sends again.
          const code = e.code === 4005 || typeof e.code !== 'number' ? 'network' : e.code;
          this.#post({ t: 'acks', to: m.tab, id: m.id, err: { code, reason: e.reason ?? String(e) } });
        },
      );
    }
  }

  /**
   * A tab follows ch from pos. The leader carries the channel from the oldest position asked
   * for; a tab that asks for an older one than it carries (a tab that was behind when the
   * leader changed, or a fresh subscription with `since`) makes it carry from there again,
   * and every other tab drops the replay as old news.
   * @param {string} tab @param {Want} want @param {boolean} known the leader knew it already
   */
  #want(tab, [ch, pos, fresh], known) {
    const c = this.#carried.get(ch);
    const inner = /** @type {Ferry} */ (this.#inner);
    if (c) {
      const at = fresh ? c.sub.position : c.from;
      if (!pos || (at && !before(pos, at))) {
        if (!known && c.sub.position) this.#post({ t: 'f', to: tab, f: { t: 'sub', ch, ep: c.sub.position.epoch, off: c.sub.position.offset } });
        return;
      }
      if (known) return;
      c.sub.unsubscribe();
      this.#carried.delete(ch);
      // The unsubscribe goes out first (the client syncs once per tick), then the new start.
      return void queueMicrotask(() => queueMicrotask(() => this.#inner === inner && !this.#carried.has(ch) && this.#carry(ch, pos)));
    }
    this.#carry(ch, pos);
  }

  /** @param {string} ch @param {Position | null} pos */
  #carry(ch, pos) {
    const inner = /** @type {Ferry} */ (this.#inner);
    /** @param {Frame} f */
    const out = (f) => this.#post({ t: 'f', f: { ...f, ch } });
    const sub = inner.subscribe(ch, (d, m) => out({ t: 'msg', ep: m.epoch, off: m.offset, d }), pos ? { since: pos } : {});
    sub.on('subscribed', (/** @type {Position} */ p) => out({ t: 'sub', ep: p.epoch, off: p.offset }));
    sub.on('reset', (/** @type {any} */ e) => out({ t: 'reset', ep: e.epoch, off: e.offset, reason: e.reason }));
    sub.on('unsubscribed', (/** @type {any} */ e) => {
      if (e.code !== 1000) {
        this.#carried.delete(ch);
        out({ t: 'unsub', code: e.code, reason: e.reason });
      }
    });
    this.#carried.set(ch, { sub, from: pos });
  }

  /** Stops carrying the channels no tab follows. */
  #drop() {
    const wanted = new Set([...this.#tabs.values()].flatMap((ws) => ws.map((w) => w[0])));
    for (const [ch, c] of this.#carried) {
      if (wanted.has(ch)) continue;
      c.sub.unsubscribe();
      this.#carried.delete(ch);
    }
  }

  /**
   * POSTs a tab's frames to /send with a credential of the shared session for the tab's cid.
   * @param {string} cid @param {Frame[]} frames @returns {Promise<Frame[]>}
   */
  async #forward(cid, frames) {
    const inner = /** @type {Ferry} */ (this.#inner);
    // Until the shared session is connected, the frames wait here (the tab's sendTimeout runs).
    if (inner.state !== 'connected') {
      await new Promise((ok) => {
        const fn = (/** @type {any} */ e) => e.state === 'connected' && (inner.off('state', fn), ok(undefined));
        inner.on('state', fn);
      });
    }
    if (this.#credSid !== inner.sid) this.#creds.clear();
    this.#credSid = inner.sid;
    let cred = this.#creds.get(cid);
    if (!cred) {
      cred = inner.request_('/negotiate', { session: inner.credential_, cid }).then((n) => n.session);
      this.#creds.set(cid, cred);
    }
    try {
      const body = await inner.request_(`/send?session=${encodeURIComponent(await cred)}`, { frames });
      return body.acks;
    } catch (err) {
      const e = /** @type {FerryError} */ (err);
      if (typeof e.code !== 'number' || shouldReconnect(e.code)) this.#creds.delete(cid);
      throw e;
    }
  }
}

/** Whether position a comes before b (another epoch counts as before: start from a). @param {Position} a @param {Position} b */
const before = (a, b) => a.epoch !== b.epoch || a.offset < b.offset;

/** The claims of a JWT; {} for any other token. @param {string | null} token @returns {{sub?: string, exp?: number}} */
function claims(token) {
  try { return JSON.parse(atob(/** @type {string} */ (token).split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))) ?? {}; } catch { return {}; }
}

/** The identity a token names: a JWT's sub, or the token itself. @param {string | null} token */
const subject = (token) => claims(token).sub ?? token ?? '';

/** The later of two tokens, by a JWT's exp (a when equal). @param {string | null} a @param {string | null} b */
const newest = (a, b) => (!b || (a && (claims(a).exp ?? 0) >= (claims(b).exp ?? 0)) ? a : b);
