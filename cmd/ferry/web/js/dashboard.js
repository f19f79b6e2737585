// The live dashboard: the ticker channel, from its history, then live, on a canvas chart.
// It counts gaps (a message whose offset isn't the one after the previous, in the same epoch,
// without a reset): switching transports should never make one.
import { BASE } from './config.js';
import { Lab } from './lab.js';
import { drawChart } from './chart.js';
import { $ } from './util.js';

const q = new URLSearchParams(location.search);
const channel = q.get('channel') || 'ticker';
$('#channel-name').textContent = channel;

let epoch = null;
let lastOffset = 0;
/** @type {Map<number, {t: number, v: number}>} offset -> point */
const points = new Map();
const stats = { live: 0, gaps: 0, resets: 0, rtt: null };
const KEEP = 600;

function add(offset, data, ts) {
  const v = Number(data?.value);
  if (!Number.isFinite(v)) return;
  points.set(offset, { t: Number(data.ts) || ts || Date.now(), v });
  while (points.size > KEEP) points.delete(Math.min(...points.keys()));
}

async function snapshot() {
  const r = await fetch(`${BASE}/api/history?channel=${encodeURIComponent(channel)}&limit=300`);
  if (!r.ok) throw new Error(`history: HTTP ${r.status}`);
  const h = await r.json();
  if (h.epoch !== epoch) points.clear();
  epoch = h.epoch;
  for (const m of h.messages) add(m.offset, m.data, m.ts);
  lastOffset = h.top;
  draw();
  return h;
}

function onMessage(data, meta) {
  if (meta.epoch === epoch && lastOffset && meta.offset !== lastOffset + 1) stats.gaps++;
  if (meta.epoch !== epoch) points.clear();
  epoch = meta.epoch;
  lastOffset = meta.offset;
  stats.live++;
  add(meta.offset, data);
  draw();
}

async function onReset(e) {
  stats.resets++;
  epoch = e.epoch;
  points.clear();
  lastOffset = 0;
  try { await snapshot(); } catch (err) { lab.log('error', 'history reload failed', String(err.message || err)); }
  if (e.epoch === epoch && lastOffset < e.offset) lastOffset = e.offset;
}

let queued = false;
function draw() {
  if (queued) return;
  queued = true;
  requestAnimationFrame(() => {
    queued = false;
    const sorted = [...points.entries()].sort((a, b) => a[0] - b[0]).map(([, p]) => p);
    drawChart($('#chart'), sorted, { windowMs: 60000, empty: `waiting for ${channel}… (is the server's --ticker on?)` });
    const last = sorted[sorted.length - 1];
    const prev = sorted[sorted.length - 2];
    const $v = $('#value');
    $v.textContent = last ? last.v.toFixed(2) : '–';
    $v.className = `v ${last && prev ? (last.v >= prev.v ? 'up' : 'down') : ''}`;
    $('#count').textContent = String(stats.live);
    $('#gaps').textContent = String(stats.gaps);
    $('#rtt').textContent = stats.rtt == null ? '–' : `${stats.rtt} ms`;
    $('#position').textContent = epoch
      ? `${channel} at ${epoch}.${lastOffset} · ${points.size} points (history, then live)${stats.resets ? ` · ${stats.resets} reset(s)` : ''}`
      : '';
  });
}
addEventListener('resize', draw);

const lab = new Lab($('#lab'));
window.demo = { lab, channel, points, stats, get epoch() { return epoch; }, get lastOffset() { return lastOffset; } };

// Upstream round trip on whatever carries the session: send() resolves on the server's ack.
// (The demo server echoes it to $session:<sid>, which this page doesn't follow.)
async function measure() {
  const f = lab.ferry;
  if (!f || f.state !== 'connected') return;
  const t0 = performance.now();
  try {
    await f.send({ type: 'rtt' });
    if (f === lab.ferry) stats.rtt = Math.round(performance.now() - t0);
    draw();
  } catch {}
}
setInterval(measure, 2000);
let wasConnected = false;
lab.onChange(() => {
  const now = lab.ferry?.state === 'connected';
  if (now && !wasConnected) measure();
  wasConnected = now;
});

let since;
try {
  const h = await snapshot();
  since = h.epoch ? { epoch: h.epoch, offset: h.top } : undefined;
} catch (err) {
  lab.log('error', 'history unavailable', String(err.message || err));
}
lab.subscribe(channel, onMessage, { since, onReset });
lab.start();
