// The plain EventSource dashboard: no Ferry client, only the browser's EventSource on
// GET /ferry/events (PROTOCOL.md §5). Each event's id is the position of every channel of the
// stream; the browser keeps the last one and sends it as Last-Event-ID when it reconnects.
import { BASE } from './config.js';
import { drawChart } from './chart.js';
import { $, el, clock } from './util.js';

const q = new URLSearchParams(location.search);
const channels = q.getAll('channel').filter(Boolean);
if (!channels.length) channels.push('ticker');
const url = `${BASE}/events?${channels.map((c) => `channel=${encodeURIComponent(c)}`).join('&')}`;
if (channels.join() !== 'ticker') {
  $('#snippet').textContent = `const es = new EventSource(\n  '${url}');\n` +
    channels.map((c) => `es.addEventListener('${c}', (e) =>\n  show(JSON.parse(e.data), e.lastEventId));`).join('\n');
}

// Everything the page saw, for tests and the curious.
const S = {
  url,
  received: [], // {ch, data, id}
  opens: 0,
  errors: 0,
  resets: [],
  lastId: '',
  idsAtOpen: [], // the last id known when each connection opened
};
window.demo = S;

const points = [];
let es = null;
// The chart is for numeric streams (the ticker); it shows up with the first value.
$('#chart-card').hidden = !channels.includes('ticker');

function status(state, text = state) {
  const s = $('#status');
  s.dataset.state = state;
  s.textContent = text;
}

function show() {
  $('#count').textContent = String(S.received.length);
  $('#reconnects').textContent = String(Math.max(0, S.opens - 1));
  $('#last-id').textContent = S.lastId || '(none yet)';
}

function open(since) {
  es = new EventSource(since ? `${url}&since=${encodeURIComponent(since)}` : url);
  es.onopen = () => {
    S.opens++;
    S.idsAtOpen.push(S.lastId);
    status('open');
    if (S.opens > 1) {
      $('#resume-note').textContent = S.lastId
        ? `Reconnected (#${S.opens - 1}), resuming after ${S.lastId}.`
        : `Reconnected (#${S.opens - 1}); no id yet, so from now.`;
    }
    show();
  };
  es.onerror = () => {
    S.errors++;
    // CONNECTING: the browser retries by itself (after the server's retry: 2000 hint).
    if (es.readyState === EventSource.CONNECTING) status('reconnecting', 'reconnecting');
    else status('closed');
  };
  for (const ch of channels) es.addEventListener(ch, (e) => onEvent(ch, e));
  es.addEventListener('reset', (e) => {
    const r = JSON.parse(e.data);
    S.lastId = e.lastEventId;
    S.resets.push(r);
    line('reset', `${r.channel}: ${r.reason || 'history no longer covers the gap'}`);
    show();
  });
  es.addEventListener('close', (e) => {
    // The server ended the stream. For codes that say "come back" (PROTOCOL.md §7: 1001,
    // 1006, 1011, 4000-4099, 4500-4749) the browser reconnects by itself, with
    // Last-Event-ID; for the others (a bad request, forbidden), stop.
    let code = 0;
    try { code = JSON.parse(e.data).code; } catch {}
    line('close', e.data);
    const again = [1001, 1006, 1011].includes(code) || (code >= 4000 && code < 4100) || (code >= 4500 && code < 4750);
    if (!again) {
      es.close();
      status('closed');
    }
  });
}

function onEvent(ch, e) {
  let data;
  try { data = JSON.parse(e.data); } catch { data = e.data; }
  S.lastId = e.lastEventId;
  S.received.push({ ch, data, id: e.lastEventId });
  if (data && Number.isFinite(Number(data.value))) {
    $('#chart-card').hidden = false;
    points.push({ t: Number(data.ts) || Date.now(), v: Number(data.value) });
    if (points.length > 600) points.shift();
    const v = $('#value');
    const prev = points[points.length - 2];
    v.textContent = Number(data.value).toFixed(2);
    v.className = `v ${prev ? (data.value >= prev.v ? 'up' : 'down') : ''}`;
    draw();
  }
  const text = typeof data === 'string' ? data
    : Number.isFinite(Number(data?.value)) ? `value ${Number(data.value).toFixed(2)}` : JSON.stringify(data);
  line(ch, `${text}  · id ${e.lastEventId}`);
  show();
}

function line(what, text) {
  const list = $('#events');
  list.prepend(el('li', {}, el('span', {}, clock()), el('span', {}, el('b', {}, what), ' ', text)));
  while (list.children.length > 14) list.lastChild.remove();
}

let queued = false;
function draw() {
  if (queued) return;
  queued = true;
  requestAnimationFrame(() => {
    queued = false;
    drawChart($('#chart'), points, { color: '#7c3aed', windowMs: 60000 });
  });
}
addEventListener('resize', draw);

$('#reopen').addEventListener('click', () => {
  es.close();
  status('connecting');
  open(S.lastId);
});

drawChart($('#chart'), points, { color: '#7c3aed', empty: `waiting for ${channels.join(', ')}…` });
open('');
