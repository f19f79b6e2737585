// The transport lab: one Ferry client that a person can push around, with a panel that shows
// which transport carries the session, why the client chose it, and controls to force a
// transport or to play a proxy that blocks one.
//
// Forcing a transport recreates the client with `transports: [name]`, resuming every channel
// from the position the old client had reached (subscribe's `since`). Blocking does not
// recreate anything: the client is given WebSocket, EventSource and fetch wrappers (its
// documented platform options) that refuse new connections of a blocked transport and cut
// the live one, as a proxy would. The client then has to notice and fall back by itself.
import { BASE } from './config.js';
import { $, el, clock } from './util.js';

const { Ferry } = await import(`${BASE}/client.js`);

export const TRANSPORTS = ['websocket', 'sse', 'longpoll'];
export const NAMES = { websocket: 'WebSocket', sse: 'SSE', longpoll: 'Long-polling' };

/** The client's reasons for a switch (TransportEvent.reason), in words. */
export function explain(reason) {
  const r = String(reason ?? '');
  const words = {
    connect: 'first choice on a new connection',
    reconnect: 'a new connection round after a loss',
    remembered: 'it worked last time on this origin, so the client starts there',
    upgrade: 'a background probe proved a better transport',
    buffering: 'the heartbeats came late or in clumps: something on the way is buffering the stream',
    'proof-timeout': 'no hello frame arrived within the proof timeout',
    'sse-error': 'the event stream failed',
    'sse-bad-frame': 'the event stream delivered something that is not a frame',
  };
  if (words[r]) return words[r];
  if (r.startsWith('ws-closed-1006')) return 'the WebSocket closed without a close frame (refused, blocked or cut)';
  if (r.startsWith('ws-closed-')) return `the WebSocket closed with code ${r.slice(10)}`;
  if (r.startsWith('poll-failed')) return 'long-poll requests kept failing';
  return r;
}

/**
 * Stand-ins for the platform's WebSocket, EventSource and fetch that pass everything through
 * unless the page blocks a transport: then new connections of it fail the way a proxy makes
 * them fail, and the live ones are cut (no close frame, no goodbye).
 */
class Network {
  constructor() {
    this.blocked = new Set();
    /** @type {Record<string, Set<{cut(): void}>>} */
    this.live = { websocket: new Set(), sse: new Set(), longpoll: new Set() };
    const net = this;
    const failSoon = (x) => setTimeout(() => x._fail(), 30);

    this.WebSocket = class DemoWebSocket {
      constructor(url) {
        this.onmessage = this.onerror = this.onclose = null;
        this._ws = null;
        this._closed = false;
        if (net.blocked.has('websocket')) { failSoon(this); return; }
        const ws = (this._ws = new WebSocket(url));
        ws.onmessage = (e) => this.onmessage?.(e);
        ws.onerror = (e) => this.onerror?.(e);
        ws.onclose = (e) => { net.live.websocket.delete(this); this._closed = true; this.onclose?.(e); };
        net.live.websocket.add(this);
      }
      get readyState() { return this._ws ? this._ws.readyState : this._closed ? 3 : 0; }
      send(data) { this._ws?.send(data); }
      close() {
        net.live.websocket.delete(this);
        this._closed = true;
        const ws = this._ws;
        this._ws = null;
        if (ws) { ws.onmessage = ws.onerror = ws.onclose = null; ws.close(); }
      }
      _fail() {
        if (this._closed) return;
        this.close();
        this.onerror?.(new Event('error'));
        this.onclose?.({ code: 1006, reason: '' });
      }
      cut() { this._fail(); }
    };

    this.EventSource = class DemoEventSource {
      constructor(url) {
        this.onmessage = this.onerror = null;
        this._es = null;
        this._closed = false;
        if (net.blocked.has('sse')) { failSoon(this); return; }
        const es = (this._es = new EventSource(url));
        es.onmessage = (e) => this.onmessage?.(e);
        es.onerror = (e) => this.onerror?.(e);
        net.live.sse.add(this);
      }
      get readyState() { return this._es ? this._es.readyState : this._closed ? 2 : 0; }
      close() {
        net.live.sse.delete(this);
        this._closed = true;
        this._es?.close();
        this._es = null;
      }
      _fail() {
        if (this._closed) return;
        this.close();
        this.onerror?.(new Event('error'));
      }
      cut() { this._fail(); }
    };

    // Only the long-poll requests are blockable: negotiate and POST /send serve every transport.
    this.fetch = (url, init = {}) => {
      const polling = new URL(url, location.href).pathname.endsWith('/poll');
      if (!polling) return fetch(url, init);
      if (net.blocked.has('longpoll')) return Promise.reject(new TypeError('Failed to fetch (blocked by the demo)'));
      const ctl = new AbortController();
      const outer = init.signal;
      if (outer) {
        if (outer.aborted) ctl.abort();
        else outer.addEventListener('abort', () => ctl.abort(), { once: true });
      }
      const req = { wasCut: false, cut() { this.wasCut = true; ctl.abort(); } };
      net.live.longpoll.add(req);
      return fetch(url, { ...init, signal: ctl.signal })
        .catch((e) => { throw req.wasCut ? new TypeError('network error (cut by the demo)') : e; })
        .finally(() => net.live.longpoll.delete(req));
    };
  }

  /** Cuts every live connection of a transport; returns how many. */
  cut(name) {
    const live = [...this.live[name]];
    for (const x of live) x.cut();
    return live.length;
  }
}

const MODES = { auto: 'Auto', websocket: 'WebSocket only', sse: 'SSE only', longpoll: 'Long-polling only' };

/**
 * new Lab(panel) renders the transport panel into `panel`. Pages subscribe through the lab
 * (lab.subscribe), which keeps their channels across recreations of the client, then call
 * lab.start(). The page's URL keeps the choices: ?transport=sse&block=websocket.
 */
export class Lab {
  constructor(panel) {
    const q = new URLSearchParams(location.search);
    this.mode = MODES[q.get('transport')] ? q.get('transport') : 'auto';
    this.net = new Network();
    for (const b of (q.get('block') || '').split(',')) if (TRANSPORTS.includes(b)) this.net.blocked.add(b);
    /** @type {Map<string, {fn: Function, since?: any, onReset?: Function, sub?: any}>} */
    this.channels = new Map();
    this.ferry = null;
    this.trying = null;
    this.listeners = new Set();
    this._render(panel);
  }

  /** Follows a channel across recreations of the client; fn(data, meta) gets each message once. */
  subscribe(channel, fn, { since, onReset } = {}) {
    const c = { fn, since, onReset };
    this.channels.set(channel, c);
    if (this.ferry) this._follow(this.ferry, channel, c);
  }

  publish(channel, data) { return this.ferry.publish(channel, data); }
  send(data) { return this.ferry.send(data); }

  /** fn() after every change of state or transport. */
  onChange(fn) { this.listeners.add(fn); }

  start() { this._create(this.mode === 'auto' ? 'page loaded' : `page loaded with ?transport=${this.mode}`); }

  /** Forces a transport ('auto' for all three, best first): a new client, resuming every channel. */
  setMode(mode) {
    if (!MODES[mode] || mode === this.mode) return;
    this.mode = mode;
    this._url();
    this._create(mode === 'auto' ? 'back to all transports' : `forced ${NAMES[mode]}`);
  }

  /** Blocks (or unblocks) a transport, as a proxy on the way would; cuts its live connection. */
  setBlocked(name, on) {
    if (on === this.net.blocked.has(name)) return;
    if (on) this.net.blocked.add(name);
    else this.net.blocked.delete(name);
    this._url();
    const n = on ? this.net.cut(name) : 0;
    this.log(on ? 'block' : 'lab', on ? `${NAMES[name]} blocked` : `${NAMES[name]} unblocked`,
      on ? `new ${NAMES[name]} connections now fail${n ? `; cut the live one` : ''}`
        : 'the client moves back up when its background probe succeeds');
  }

  /** Cuts the live connection of the current transport without blocking it: a network blip. */
  cut() {
    const t = this.ferry?.transport;
    if (!t) return this.log('lab', 'nothing to cut', 'not connected');
    const n = this.net.cut(t);
    this.log('block', `cut the ${NAMES[t]} connection`, n
      ? (t === 'longpoll' ? 'the pending poll fails; the client polls again from its cursor' : 'the client reconnects and resumes from its positions')
      : 'no live connection at this instant');
  }

  // ---- the client ---------------------------------------------------------------------

  _create(why) {
    const old = this.ferry;
    if (old) {
      // Keep where each channel got to: the new client resumes there.
      for (const c of this.channels.values()) if (c.sub?.position) c.since = c.sub.position;
      this.ferry = null;
      old.close();
    }
    const transports = this.mode === 'auto' ? TRANSPORTS : [this.mode];
    this.log('lab', `new client: ${transports.map((t) => NAMES[t]).join(' → ')}`, why);
    const ferry = new Ferry(BASE, {
      transports,
      WebSocket: this.net.WebSocket,
      EventSource: this.net.EventSource,
      fetch: this.net.fetch,
    });
    this.ferry = ferry;
    this.trying = null;
    window.ferry = ferry;
    const mine = (fn) => (e) => { if (this.ferry === ferry) fn(e); };
    ferry.on('state', mine((e) => {
      const why = e.reason ? `${e.code ?? ''} ${e.reason}`.trim() : '';
      const what = e.state === 'connected' ? `connected on ${NAMES[e.transport]}` : e.state;
      this.log('state', what, why, { state: e.state });
      this._show();
    }));
    ferry.on('transport', mine((e) => {
      this.trying = e.to;
      this.log('transport', `${e.from ? NAMES[e.from] : 'start'} → ${NAMES[e.to]}`, `${e.reason}: ${explain(e.reason)}`,
        { from: e.from ?? '', to: e.to, reason: String(e.reason) });
      this._show();
    }));
    ferry.on('error', mine((e) => this.log('error', e.code === 'network' ? 'server unreachable' : `error ${e.code}`, e.reason)));
    for (const [ch, c] of this.channels) this._follow(ferry, ch, c);
    this._show();
  }

  _follow(ferry, channel, c) {
    const sub = ferry.subscribe(channel, (data, meta) => c.fn(data, meta), c.since ? { since: c.since } : undefined);
    c.sub = sub;
    const mine = (fn) => (e) => { if (this.ferry === ferry) fn(e); };
    sub.on('subscribed', mine((p) => this.log('sub', `${channel}: subscribed`, `continues after ${p.epoch}.${p.offset}`)));
    sub.on('reset', mine((e) => {
      this.log('reset', `${channel}: reset`, `${e.reason || 'history no longer covers the gap'}; now at ${e.epoch}.${e.offset}: reload a snapshot`);
      c.onReset?.(e);
    }));
    sub.on('error', mine((e) => this.log('error', `${channel}: ${e.code}`, e.reason)));
  }

  _url() {
    const q = new URLSearchParams(location.search);
    if (this.mode === 'auto') q.delete('transport'); else q.set('transport', this.mode);
    if (this.net.blocked.size) q.set('block', [...this.net.blocked].join(',')); else q.delete('block');
    const s = q.toString();
    history.replaceState(null, '', location.pathname + (s ? `?${s}` : ''));
  }

  // ---- the panel ----------------------------------------------------------------------

  _render(panel) {
    panel.classList.add('card', 'lab');
    panel.innerHTML = `
      <div>
        <h3>Transport</h3>
        <div class="lab-now">
          <span id="transport" class="badge" data-transport="" data-state="connecting" aria-live="polite">connecting…</span>
          <span id="state" class="state" data-state="connecting">connecting</span>
        </div>
        <div class="meta" id="lab-meta">&nbsp;</div>
      </div>
      <fieldset>
        <legend>Use</legend>
        <div class="seg" id="mode">
          ${Object.entries(MODES).map(([v, l]) => `<label><input type="radio" name="mode" value="${v}">${l}</label>`).join('')}
        </div>
        <p class="hint">Auto tries WebSocket, then SSE, then long-polling, and keeps the first that proves itself with a real frame.</p>
      </fieldset>
      <fieldset>
        <legend>Play a proxy that blocks</legend>
        <div class="seg block" id="block">
          ${TRANSPORTS.map((t) => `<label><input type="checkbox" name="block" value="${t}">${NAMES[t]}</label>`).join('')}
        </div>
        <p class="hint">Blocking cuts the live connection and refuses new ones. Unblocked, the client probes its way back up in the background.</p>
      </fieldset>
      <div><button type="button" id="cut">Cut the connection</button></div>
      <div>
        <h3>Why it switched</h3>
        <ol class="log" id="lab-log"></ol>
      </div>`;
    for (const r of panel.querySelectorAll('input[name=mode]')) {
      r.checked = r.value === this.mode;
      r.addEventListener('change', () => r.checked && this.setMode(r.value));
    }
    for (const b of panel.querySelectorAll('input[name=block]')) {
      b.checked = this.net.blocked.has(b.value);
      b.addEventListener('change', () => this.setBlocked(b.value, b.checked));
    }
    $('#cut', panel).addEventListener('click', () => this.cut());
    this.$log = $('#lab-log', panel);
    this.$badge = $('#transport', panel);
    this.$state = $('#state', panel);
    this.$meta = $('#lab-meta', panel);
  }

  _show() {
    const f = this.ferry;
    const state = f ? f.state : 'connecting';
    const t = f?.transport ?? null;
    this.$badge.dataset.transport = t ?? this.trying ?? '';
    this.$badge.dataset.state = state;
    this.$badge.textContent = t ? NAMES[t] : this.trying ? `trying ${NAMES[this.trying]}…` : 'connecting…';
    this.$state.dataset.state = state;
    this.$state.textContent = state;
    this.$meta.innerHTML = '';
    if (f?.sid) this.$meta.append('session ', el('code', {}, f.sid.slice(0, 10) + '…'));
    if (this.net.blocked.size) this.$meta.append(` · blocking ${[...this.net.blocked].map((b) => NAMES[b]).join(', ')}`);
    for (const fn of this.listeners) fn();
  }

  /** Adds a line to the panel's log (newest first). */
  log(kind, what, why = '', data = {}) {
    const li = el('li', { dataset: { kind, ...data } },
      el('time', {}, clock()),
      el('span', {}, el('b', {}, what), why ? el('span', { className: 'why' }, why) : ''));
    this.$log.prepend(li);
    while (this.$log.children.length > 150) this.$log.lastChild.remove();
  }
}
