// The chat room: tabs publish to room:<name> and follow it. The view is a snapshot from
// GET /api/history, then the live messages after it; after a reset (history no longer covers
// a gap, e.g. the server restarted without its state) it takes a new snapshot. Messages are
// kept by offset, so a message seen in both the snapshot and the stream is shown once.
// Who is in the room comes from the server's presence on the channel: see followPresence.
import { BASE } from './config.js';
import { Lab } from './lab.js';
import { $, el, ago } from './util.js';

const { presence, presenceFeed } = await import(`${BASE}/presence.js`);

const q = new URLSearchParams(location.search);
const room = (q.get('room') || 'lobby').replace(/[^A-Za-z0-9_.@#-]/g, '') || 'lobby';
const channel = `room:${room}`;
const ACTIVE_MS = 10 * 60 * 1000;
const KEEP = 200;

const ANIMALS = ['otter', 'heron', 'lynx', 'puffin', 'gecko', 'marten', 'ibis', 'newt', 'wren', 'orca'];
const COLORS = ['teal', 'amber', 'coral', 'indigo', 'olive', 'plum', 'slate', 'rust'];
const pick = (a) => a[Math.floor(Math.random() * a.length)];
// One name per tab (sessionStorage), so two tabs are two people. The number keeps two tabs
// from drawing the same name (1 in 80 without it), whose messages would look like each
// other's own.
let me = sessionStorage.getItem('ferry-demo-name') || `${pick(COLORS)}-${pick(ANIMALS)}-${10 + Math.floor(Math.random() * 90)}`;
sessionStorage.setItem('ferry-demo-name', me);

const $messages = $('#messages');
const $name = $('#name');
const $text = $('#text');
$name.value = me;
$name.addEventListener('change', () => {
  me = $name.value.trim().slice(0, 24) || me;
  $name.value = me;
  sessionStorage.setItem('ferry-demo-name', me);
  render();
});
$('#channel-name').textContent = channel;
$('#presence-channel').textContent = `$presence:${channel}`;
$('#room-title').textContent = `#${room}`;
document.title = `#${room} · Ferry chat`;

// The view: messages of the current epoch by offset, and this tab's own messages in flight.
let epoch = null;
/** @type {Map<number, {name: string, text: string, at: number, id?: string}>} */
const msgs = new Map();
/** @type {Map<string, {text: string, at: number, state: 'sending'|'failed', why?: string}>} */
const pending = new Map();
const notices = [];
// For tests and the curious: arrivals by message id (each should be 1).
const arrivals = new Map();

function put(offset, data, ts) {
  const d = data && typeof data === 'object' ? data : { text: JSON.stringify(data) };
  // The id is the message's idempotency key: a resend after a switch may publish it twice.
  if (typeof d.id === 'string' && [...msgs.values()].some((m) => m.id === d.id)) return;
  msgs.set(offset, {
    name: String(d.name ?? 'server').slice(0, 40),
    text: String(d.text ?? JSON.stringify(d)),
    at: Number(d.at) || ts || Date.now(),
    id: typeof d.id === 'string' ? d.id : undefined,
  });
  if (typeof d.id === 'string') pending.delete(d.id);
  // Presence knows sessions, not chat names: a session's messages tell its name.
  if (typeof d.sid === 'string') names.set(d.sid, String(d.name ?? '').slice(0, 40));
  while (msgs.size > KEEP) msgs.delete(Math.min(...msgs.keys()));
}

/** Takes a snapshot of the channel from its history. */
async function snapshot() {
  const r = await fetch(`${BASE}/api/history?channel=${encodeURIComponent(channel)}&limit=50`);
  if (!r.ok) throw new Error(`history: HTTP ${r.status}`);
  const h = await r.json();
  if (h.epoch !== epoch) msgs.clear();
  epoch = h.epoch;
  for (const m of h.messages) put(m.offset, m.data, m.ts);
  render();
  return h;
}

function onMessage(data, meta) {
  if (meta.epoch !== epoch) {
    msgs.clear();
    epoch = meta.epoch;
  }
  put(meta.offset, data);
  if (typeof data?.id === 'string') arrivals.set(data.id, (arrivals.get(data.id) || 0) + 1);
  render();
}

async function onReset(e) {
  // Shown where it happened: before the messages that follow the reset position.
  notices.push({ epoch: e.epoch, after: e.offset, text: `The channel was reset (${e.reason || 'history no longer covers the gap'}): reloaded from history.` });
  epoch = e.epoch;
  msgs.clear();
  try {
    await snapshot();
  } catch (err) {
    lab.log('error', 'history reload failed', String(err.message || err));
  }
}

function render() {
  const stick = $messages.scrollHeight - $messages.scrollTop - $messages.clientHeight < 40;
  const items = [];
  const sorted = [...msgs.entries()].sort((a, b) => a[0] - b[0]);
  const notice = (n) => el('li', { className: 'notice' }, n.text);
  const shown = notices.slice(-3);
  // Notices of an earlier epoch go first; those of this one before the messages after them.
  const later = shown.filter((n) => n.epoch === epoch);
  for (const n of shown) if (n.epoch !== epoch) items.push(notice(n));
  for (const [offset, m] of sorted) {
    while (later.length && later[0].after < offset) items.push(notice(later.shift()));
    items.push(el('li', { className: `msg${m.name === me ? ' mine' : ''}`, dataset: { offset, id: m.id ?? '' } },
      el('div', { className: 'who' }, el('b', {}, m.name), ` · ${new Date(m.at).toLocaleTimeString()} · #${offset}`),
      el('div', { className: 'text' }, m.text)));
  }
  for (const n of later) items.push(notice(n));
  for (const [id, p] of pending) {
    items.push(el('li', { className: `msg mine ${p.state === 'failed' ? 'failed' : 'pending'}`, dataset: { id } },
      el('div', { className: 'who' }, p.state === 'failed' ? `not sent: ${p.why}` : 'sending…'),
      el('div', { className: 'text' }, p.text)));
  }
  if (!items.length) items.push(el('li', { className: 'notice' }, 'No messages in the last few minutes. Say hello, then open another tab.'));
  $messages.replaceChildren(...items);
  if (stick) $messages.scrollTop = $messages.scrollHeight;
  people();
  renderMembers();
}

/** Who spoke in the last ACTIVE_MS, most recent first. */
function people() {
  const last = new Map();
  for (const m of msgs.values()) if (Date.now() - m.at < ACTIVE_MS) last.set(m.name, Math.max(last.get(m.name) || 0, m.at));
  const list = [...last.entries()].sort((a, b) => b[1] - a[1]);
  $('#people').replaceChildren(...(list.length ? list.map(([name, at]) =>
    el('li', {}, el('span', {}, name, name === me ? el('span', { className: 'you' }, 'you') : ''), el('span', { className: 'ago' }, ago(at))))
    : [el('li', { className: 'ago' }, 'nobody yet')]));
}
setInterval(people, 5000);

// ---- presence: who is in the room ---------------------------------------------------------
//
// The members are the sessions subscribed to the channel, as the server keeps them. The page
// listens to the join and leave events of the subscription's presence feed ($presence:<channel>,
// subscribed by presenceFeed) and takes a snapshot with presence(sub) each time the feed is
// confirmed or reset: from then on every change arrives as an event. Events that come while
// a snapshot is on its way are applied again on top of it, since the snapshot may have been
// taken before them; joins and leaves set a state rather than toggle it, so applying one
// twice is harmless.

/** @type {Map<string, {session: string, user?: string, since: number}>} session → member */
const members = new Map();
/** session → the chat name its messages carry */
const names = new Map();
// For tests and the curious: every join and leave event, in order.
const presenceLog = [];
// The sessions this tab has had: forcing a transport makes a new client, hence a new
// session, and the old one stays present until it expires. The tab hides its own.
const ownSids = new Set();
let presenceSub = null; // the room subscription whose presence is shown
let inFlight = null; // events seen while a snapshot is on its way
let snapshots = 0; // tells a snapshot's answer from a later one's
let presenceError = '';

function applyPresence(event, m) {
  if (event === 'leave') members.delete(m.session);
  else if (!members.has(m.session)) members.set(m.session, { session: m.session, user: m.user, since: Date.now() });
}

/** Follows the presence of the current client's subscription; a new client brings a new one. */
function followPresence() {
  const ferry = lab.ferry;
  const sub = ferry?.subscription(channel);
  if (ferry?.sid) ownSids.add(ferry.sid);
  if (!sub || sub === presenceSub) return renderMembers();
  presenceSub = sub;
  members.clear();
  inFlight = null;
  const mine = (fn) => (e) => { if (presenceSub === sub) fn(e); };
  const feed = presenceFeed(sub);
  for (const event of ['join', 'leave']) {
    feed.on(event, mine((m) => {
      presenceLog.push({ event, session: m.session, user: m.user, at: Date.now() });
      inFlight?.push([event, m]);
      applyPresence(event, m);
      renderMembers();
    }));
  }
  feed.on('subscribed', mine(() => snapshotPresence(sub)));
  feed.on('reset', mine(() => snapshotPresence(sub))); // events were lost: start over
  renderMembers();
}

async function snapshotPresence(sub) {
  const n = ++snapshots;
  inFlight = [];
  let list;
  try {
    list = await presence(sub);
  } catch (err) {
    if (presenceSub !== sub || n !== snapshots) return;
    inFlight = null;
    // 4100 is the server's answer for a channel without presence (--presence).
    presenceError = err.code === 4100 ? `The server keeps no presence on ${channel}.` : `Presence unavailable: ${err.reason || err.message}`;
    return renderMembers();
  }
  if (presenceSub !== sub || n !== snapshots) return;
  const replay = inFlight;
  inFlight = null;
  const seen = new Map(members);
  members.clear();
  for (const m of list) members.set(m.session, { session: m.session, user: m.user, since: seen.get(m.session)?.since ?? Date.now() });
  for (const [event, m] of replay) applyPresence(event, m);
  presenceError = '';
  renderMembers();
}

/** A member's name: this tab's own, the identity the server verified, the name its messages carry, or its session. */
function memberName(m, current) {
  if (m.session === current) return me;
  return m.user || names.get(m.session) || `guest ${m.session.slice(0, 6)}`;
}

function renderMembers() {
  const current = lab.ferry?.sid ?? null;
  const list = [...members.values()]
    .filter((m) => m.session === current || !ownSids.has(m.session))
    .map((m) => ({ ...m, name: memberName(m, current) }))
    .sort((x, y) => (y.session === current) - (x.session === current) || x.name.localeCompare(y.name));
  $('#members-count').textContent = list.length ? String(list.length) : '';
  $('#members').replaceChildren(...(list.length ? list.map((m) =>
    el('li', { dataset: { session: m.session, you: m.session === current } },
      el('span', {}, m.name, m.session === current ? el('span', { className: 'you' }, 'you') : ''),
      el('code', { className: 'ago', title: `session ${m.session}` }, m.session.slice(0, 8))))
    : [el('li', { className: 'ago' }, presenceError ? 'unknown' : 'connecting…')]));
  const $err = $('#presence-error');
  $err.textContent = presenceError;
  $err.hidden = !presenceError;
}

$('#composer').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = $text.value.trim();
  if (!text) return;
  $text.value = '';
  const id = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  pending.set(id, { text, at: Date.now(), state: 'sending' });
  render();
  // The session id lets the other tabs put this name on this session in their member list.
  publish({ id, name: me, text, at: Date.now(), sid: lab.ferry?.sid ?? undefined });
});

/**
 * Publishes a chat message. The client queues it while it reconnects and resends it until
 * acknowledged; only closing the client (the panel recreates it to force a transport) drops
 * what is unacknowledged, so then it goes again on the new client.
 */
function publish(msg) {
  const ferry = lab.ferry;
  lab.publish(channel, msg).catch((err) => {
    if (err.code === 'closed' && lab.ferry !== ferry && pending.has(msg.id)) return publish(msg);
    const p = pending.get(msg.id);
    if (p) Object.assign(p, { state: 'failed', why: err.reason || err.message });
    render();
  });
}

const lab = new Lab($('#lab'));
// After every change of client, state or transport: a new client has a new subscription.
lab.onChange(followPresence);
window.demo = { lab, channel, msgs, pending, arrivals, members, presenceLog, get epoch() { return epoch; } };

let since;
try {
  const h = await snapshot();
  // Follow the channel from exactly where the snapshot ends.
  since = h.epoch ? { epoch: h.epoch, offset: h.top } : undefined;
} catch (err) {
  lab.log('error', 'history unavailable', String(err.message || err));
}
lab.subscribe(channel, onMessage, { since, onReset });
lab.start();
$text.focus();
