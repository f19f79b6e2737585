// Test doubles: a manual clock, and a small in-memory Ferry server (PROTOCOL.md, scripted)
// behind fake WebSocket, EventSource and fetch constructors.
import { Ferry } from '../src/index.js';

/** Lets every pending promise chain and immediate run. Not a sleep: no time passes. */
export async function settle() {
  for (let i = 0; i < 4; i++) await new Promise((r) => setImmediate(r));
}

/** Settles until cond() holds; fails the test if it never does (nothing else will change it). */
export async function until(cond, what = 'condition') {
  for (let i = 0; i < 50; i++) {
    if (cond()) return;
    await settle();
  }
  throw new Error(`never reached: ${what}`);
}

/** The delays (ms) of the rounds scheduled after a backoff so far, from the clients' debug log. */
export const retries = (server) => server.log.filter((a) => a[0] === 'retry in').map((a) => a[1]);

export class Clock {
  constructor() {
    this.t = 1_700_000_000_000;
    this.timers = new Map();
    this.id = 0;
    this.now = () => this.t;
    this.setTimeout = (fn, ms = 0) => {
      this.timers.set(++this.id, { at: this.t + Math.max(0, ms), fn });
      return this.id;
    };
    this.clearTimeout = (id) => this.timers.delete(id);
  }

  /** Advances time by ms, running each timer at its time and settling after each. */
  async tick(ms) {
    const end = this.t + ms;
    await settle();
    for (;;) {
      let next = null;
      for (const [id, x] of this.timers) if (x.at <= end && (!next || x.at < next[1].at)) next = [id, x];
      if (!next) break;
      this.timers.delete(next[0]);
      this.t = Math.max(this.t, next[1].at);
      next[1].fn();
      await settle();
    }
    this.t = end;
    await settle();
  }
}

export class MemStorage {
  constructor() { this.m = new Map(); }
  getItem(k) { return this.m.has(k) ? this.m.get(k) : null; }
  setItem(k, v) { this.m.set(k, String(v)); }
  removeItem(k) { this.m.delete(k); }
}

const json = (status, body) => new Response(status === 204 ? null : JSON.stringify(body), { status });

function parseCursor(s) {
  const out = [];
  for (const part of (s || '').split(',').filter(Boolean)) {
    const eq = part.lastIndexOf('=');
    const pos = part.slice(eq + 1);
    const dot = pos.indexOf('.');
    out.push([part.slice(0, eq), pos ? [pos.slice(0, dot), Number(pos.slice(dot + 1))] : null]);
  }
  return out;
}

/**
 * One attachment, server side. Subclasses deliver frames over their transport.
 */
class Conn {
  constructor(server, tr, params) {
    this.server = server;
    this.tr = tr;
    this.params = params;
    this.subs = new Set();
    this.pings = 0;
    this.ended = false;
    this.sent = []; // every frame pushed to the client
  }

  push(f) {
    if (this.ended) return;
    this.sent.push(f);
    this.deliver(f);
  }

  /** Ends the attachment with a close frame. */
  end(code, reason = `closed ${code}`) {
    if (this.ended) return;
    this.push({ t: 'close', code, reason });
    this.ended = true;
    this.hangUp(code);
  }

  /** Cuts the connection without a word (a network drop). */
  cut() {
    if (this.ended) return;
    this.ended = true;
    this.hangUp(1006);
  }

  supersede() { this.end(4001, 'superseded'); }
}

export class FakeServer {
  constructor(clock) {
    this.clock = clock;
    this.transports = ['websocket', 'sse', 'longpoll'];
    // Per transport: 'ok' (attaches), 'silent' (opens, nothing comes), 'fail' (errors at once),
    // 'never' (never opens); 'mute' for websocket (attaches server side, the client hears
    // nothing); for longpoll also an HTTP status to answer every poll with.
    this.mode = { websocket: 'ok', sse: 'ok', longpoll: 'ok' };
    this.hb = 15000;
    this.hold = 25000;
    this.ack = true; // acknowledge upstream frames on WebSockets
    this.refuse = null; // (frame) => err for frames to refuse
    this.lose = 0; // POST /send responses to lose after processing them
    this.failPolls = 0; // polls to answer with 502 before anything else
    this.negotiateReply = null; // (body) => Response, overriding negotiate
    this.channels = new Map();
    this.sessions = new Map(); // credential → { sid, cred, cid }
    this.windows = new Map(); // dedupe key (the cid, else the credential) → seq → first ack
    this.n = 0;
    this.att = null; // the current attachment
    this.conns = []; // every attachment ever
    this.sockets = [];
    this.streams = [];
    this.requests = [];
    this.negotiations = [];
    this.received = []; // upstream frames processed (not duplicates)
    this.log = []; // the debug log of the clients made by client()
    const server = this;

    this.fetch = async (href, init = {}) => {
      const url = new URL(href);
      const path = url.pathname.replace(/^\/ferry/, '');
      server.requests.push({ path, url, init });
      if (path === '/negotiate') return server._negotiate(init);
      if (path === '/send') return server._send(url, init);
      if (path === '/poll') return server._poll(url, init);
      return json(404, {});
    };

    this.WebSocket = class FakeWebSocket {
      constructor(url) {
        this.url = url;
        this.readyState = 0;
        this.sent = [];
        server.sockets.push(this);
        const mode = server.mode.websocket;
        queueMicrotask(() => {
          if (mode === 'fail') return this._closed(1006);
          if (mode === 'never') return;
          this.readyState = 1;
          this.onopen?.({});
          if (mode === 'silent') return;
          const conn = new WsConn(server, this);
          if (mode === 'mute') conn.deliver = () => {}; // attached server side, but nothing gets through
          server._attach(conn, new URL(url).searchParams, true);
        });
      }
      send(text) {
        if (this.readyState !== 1) throw new Error('send on a socket that is not open');
        const f = JSON.parse(text);
        this.sent.push(f);
        this.conn?.onFrame(f);
      }
      close() {
        if (this.readyState === 3) return;
        this.closedByClient = true;
        this.conn?.cut();
        this._closed(1005);
      }
      _closed(code) {
        if (this.readyState === 3 && !this.closedByClient) return;
        this.readyState = 3;
        queueMicrotask(() => this.onclose?.({ code, reason: '' }));
      }
    };

    this.EventSource = class FakeEventSource {
      constructor(url) {
        this.url = url;
        this.readyState = 0;
        server.streams.push(this);
        const mode = server.mode.sse;
        queueMicrotask(() => {
          if (mode === 'fail') return this.onerror?.({});
          if (mode === 'never') return;
          this.readyState = 1;
          this.onopen?.({});
          if (mode === 'ok') server._attach(new SseConn(server, this), new URL(url).searchParams, true);
        });
      }
      close() {
        this.readyState = 2;
        this.closedByClient = true;
        this.conn?.cut();
      }
    };
  }

  /** The client options that make a Ferry talk to this server on the clock. */
  options(extra = {}) {
    return {
      WebSocket: this.WebSocket,
      EventSource: this.EventSource,
      fetch: this.fetch,
      setTimeout: this.clock.setTimeout,
      clearTimeout: this.clock.clearTimeout,
      now: this.clock.now,
      random: () => 0.5,
      // The debug log, kept for tests: retries(server) lists the rounds scheduled after a backoff.
      debug: (...args) => this.log.push(args),
      online: null,
      ...extra,
    };
  }

  /** A client of this server: the base Ferry, or another class of the same API (share.js's). */
  client(extra, Client = Ferry) { return new Client('https://example.test/ferry', this.options(extra)); }

  channel(ch) {
    let c = this.channels.get(ch);
    if (!c) this.channels.set(ch, (c = { ep: 'e1', top: 0, msgs: [] }));
    return c;
  }

  publish(ch, d) {
    const c = this.channel(ch);
    const f = { t: 'msg', ch, ep: c.ep, off: ++c.top, d };
    c.msgs.push(f);
    if (this.att?.subs.has(ch)) this.att.push(f);
    return f;
  }

  /** Loses the history of ch: a new epoch, as after a broker restart without persistence. */
  newEpoch(ch, ep) {
    const c = this.channel(ch);
    Object.assign(c, { ep, top: 0, msgs: [] });
  }

  /** Sends a heartbeat on the current attachment; ts defaults to now. */
  ping(ts = this.clock.now()) {
    const a = this.att;
    a?.push({ t: 'ping', seq: ++a.pings, ts });
  }

  expireAll() { this.sessions.clear(); }

  _session(cred) { return this.sessions.get(cred); }

  _attach(conn, params, hello) {
    const sess = this._session(params.get('session'));
    if (!sess) return conn.end(4005, 'session unknown or expired');
    conn.sess = sess;
    conn.params = params;
    const prev = this.att;
    this.att = conn;
    this.conns.push(conn);
    if (prev && prev !== conn) prev.supersede();
    if (hello) conn.push({ t: 'hello', sid: sess.sid, v: 1, tr: conn.tr, ts: this.clock.now(), hb: this.hb });
    for (const [ch, pos] of parseCursor(params.get('cursor'))) {
      conn.subs.add(ch);
      this._resume(conn, ch, pos, hello);
    }
  }

  _resume(conn, ch, pos, confirm) {
    const c = this.channel(ch);
    if (!pos) return conn.push({ t: 'sub', ch, ep: c.ep, off: c.top });
    const [ep, off] = pos;
    const first = c.msgs.length ? c.msgs[0].off : c.top + 1;
    if (ep !== c.ep || off < first - 1) return conn.push({ t: 'reset', ch, ep: c.ep, off: c.top, reason: 'history lost' });
    if (confirm) conn.push({ t: 'sub', ch, ep, off });
    for (const m of c.msgs) if (m.off > off) conn.push(m);
  }

  /** Like the real server (PROTOCOL.md §3): dedupe by cid across sessions, and a duplicate gets the first outcome. */
  _upstream(sess, f) {
    const err = this.refuse?.(f);
    if (err) return { t: 'ack', seq: f.seq, err };
    const key = sess.cid ?? sess.cred;
    if (!this.windows.has(key)) this.windows.set(key, new Map());
    const seen = this.windows.get(key);
    if (seen.has(f.seq)) return { ...seen.get(f.seq), dup: true };
    this.received.push({ sid: sess.sid, ...f });
    let ack = { t: 'ack', seq: f.seq };
    if (f.t === 'pub') {
      const m = this.publish(f.ch, f.d);
      ack = { ...ack, ep: m.ep, off: m.off };
    }
    seen.set(f.seq, ack);
    return ack;
  }

  _negotiate(init) {
    const body = JSON.parse(init.body || '{}');
    this.negotiations.push({ body, headers: init.headers });
    if (this.negotiateReply) return this.negotiateReply(body);
    let sess = body.session && this._session(body.session);
    const resumed = !!sess;
    if (sess && body.cid && body.cid !== sess.cid) {
      // The credential names the cid (PROTOCOL.md §2): another cid, another credential of the session.
      sess = { ...sess, cid: body.cid, cred: `${sess.cred}.${body.cid}` };
      this.sessions.set(sess.cred, sess);
    }
    if (!sess) {
      const n = ++this.n;
      sess = { sid: `sid${n}`, cred: `cred${n}`, cid: body.cid };
      this.sessions.set(sess.cred, sess);
    }
    return json(200, {
      v: 1, session: sess.cred, sid: sess.sid, resumed, transports: this.transports,
      heartbeatMs: this.hb, pollHoldMs: this.hold, sessionTtlMs: 60000,
      limits: { maxMessageBytes: 65536, maxChannels: 128, maxBodyBytes: 1048576 },
    });
  }

  _send(url, init) {
    const sess = this._session(url.searchParams.get('session'));
    if (!sess) return json(401, { code: 4005, reason: 'session unknown or expired' });
    const acks = JSON.parse(init.body).frames.map((f) => this._upstream(sess, f));
    if (this.lose > 0) {
      this.lose--;
      return Promise.reject(new TypeError('fetch failed: connection reset'));
    }
    return json(200, { acks });
  }

  _poll(url, init) {
    if (this.failPolls > 0) {
      this.failPolls--;
      return json(502, undefined);
    }
    const mode = this.mode.longpoll;
    if (mode === 'fail') return Promise.reject(new TypeError('fetch failed'));
    if (typeof mode === 'number') return json(mode, mode === 502 ? undefined : {});
    return new Promise((resolve, reject) => {
      const conn = new PollConn(this, resolve);
      init.signal?.addEventListener('abort', () => {
        conn.ended = true;
        reject(new DOMException('aborted', 'AbortError'));
      });
      if (mode === 'never') return;
      this._attach(conn, url.searchParams, url.searchParams.get('hello') === '1');
      conn.hold(Math.min(Number(url.searchParams.get('hold')) || Infinity, this.hold));
    });
  }
}

class WsConn extends Conn {
  constructor(server, ws) {
    super(server, 'websocket');
    this.ws = ws;
    ws.conn = this;
  }
  deliver(f) {
    if (this.ws.readyState === 1) this.ws.onmessage?.({ data: JSON.stringify(f) });
  }
  hangUp(code) { if (!this.ws.closedByClient) this.ws._closed(code); }
  onFrame(f) {
    if (this.ended || this.server.att !== this) return;
    if (f.t === 'sub') {
      this.subs.add(f.ch);
      this.server._resume(this, f.ch, f.ep ? [f.ep, f.off] : null, true);
    } else if (f.t === 'unsub') {
      this.subs.delete(f.ch);
    } else if (f.t === 'send' || f.t === 'pub') {
      const ack = this.server._upstream(this.sess, f);
      if (this.server.ack) this.push(ack);
    }
  }
}

class SseConn extends Conn {
  constructor(server, es) {
    super(server, 'sse');
    this.es = es;
    es.conn = this;
  }
  deliver(f) {
    if (this.es.readyState === 1) this.es.onmessage?.({ data: JSON.stringify(f) });
  }
  // The stream ends; EventSource reports every end as an error.
  hangUp() { if (!this.es.closedByClient) queueMicrotask(() => this.es.onerror?.({})); }
}

/** One poll: frames collect until the response goes (at once when there are some). */
class PollConn extends Conn {
  constructor(server, resolve) {
    super(server, 'longpoll');
    this.resolve = resolve;
    this.out = [];
    this.done = false;
  }
  deliver(f) {
    if (f.t === 'close') return;
    this.out.push(f);
    if (this.holding) this._respond();
  }
  hold(ms) {
    if (this.ended) return;
    if (this.out.length) return this._respond();
    this.holding = true;
    this.timer = this.server.clock.setTimeout(() => this.server.att === this ? this.push({ t: 'ping', seq: ++this.pings, ts: this.server.clock.now() }) : this._respond(), ms);
  }
  end(code, reason) {
    if (this.done) return;
    this.ended = true;
    this._reply(json(code === 4001 ? 204 : 401, code === 4001 ? null : { code, reason }));
  }
  hangUp() {}
  cut() {
    if (this.done) return;
    this.ended = true;
    this.done = true;
    this.server.clock.clearTimeout(this.timer);
    // the client sees a failed request
    this.resolve(Promise.reject(new TypeError('fetch failed: socket hang up')));
  }
  _respond() {
    queueMicrotask(() => this._reply(json(200, { frames: this.out })));
  }
  _reply(res) {
    if (this.done) return;
    this.done = true;
    this.ended = true;
    this.server.clock.clearTimeout(this.timer);
    this.resolve(res);
  }
}

/**
 * The Web Locks API as tabs of one origin see it: one holder per name, the others queued in
 * order; `request` resolves when the callback's promise does.
 */
export class Locks {
  constructor() {
    this.queues = new Map();
    this.held = new Map();
  }

  request(name, opts, cb) {
    if (typeof opts === 'function') [opts, cb] = [{}, opts];
    return new Promise((resolve, reject) => {
      const entry = { cb, resolve };
      opts.signal?.addEventListener('abort', () => {
        const q = this.queues.get(name) ?? [];
        if (q.includes(entry)) {
          q.splice(q.indexOf(entry), 1);
          reject(new DOMException('aborted', 'AbortError'));
        }
      });
      if (!this.queues.has(name)) this.queues.set(name, []);
      this.queues.get(name).push(entry);
      this._next(name);
    });
  }

  _next(name) {
    if (this.held.has(name)) return;
    const e = this.queues.get(name)?.shift();
    if (!e) return;
    this.held.set(name, e);
    // release() frees it as a crash of its holder would: the callback's promise never settles.
    e.release = (v) => {
      if (this.held.get(name) !== e) return;
      this.held.delete(name);
      e.resolve(v);
      this._next(name);
    };
    Promise.resolve(e.cb()).then(e.release);
  }
}
