// A small line chart on a <canvas>: time on x, value on y, with a soft fill, grid lines and
// labels. No library; redraws from scratch, which is cheap for a few hundred points.

const INK = '#5b6577';
const GRID = '#e9ecf2';

/** Rounds a span to a pleasant grid step (1, 2 or 5 times a power of ten). */
function niceStep(span, lines) {
  const raw = span / lines;
  const p = 10 ** Math.floor(Math.log10(raw));
  const m = raw / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

/**
 * Draws points [{t, v}] (sorted by t) on canvas, over the last `windowMs` ending at the
 * newest point.
 */
export function drawChart(canvas, points, { color = '#0f766e', windowMs = 60000, empty = 'waiting for data…' } = {}) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.fillStyle = '#ffffff';
  g.fillRect(0, 0, w, h);
  g.font = '12px system-ui, sans-serif';

  const pad = { l: 52, r: 16, t: 14, b: 26 };
  const cw = w - pad.l - pad.r;
  const ch = h - pad.t - pad.b;
  if (!points.length) {
    g.fillStyle = INK;
    g.textAlign = 'center';
    g.fillText(empty, w / 2, h / 2);
    return;
  }
  const t1 = points[points.length - 1].t;
  const t0 = t1 - windowMs;
  const shown = points.filter((p) => p.t >= t0);
  let lo = Math.min(...shown.map((p) => p.v));
  let hi = Math.max(...shown.map((p) => p.v));
  if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
  const step = niceStep(hi - lo, 4);
  lo = Math.floor(lo / step) * step;
  hi = Math.ceil(hi / step) * step;
  const x = (t) => pad.l + ((t - t0) / windowMs) * cw;
  const y = (v) => pad.t + (1 - (v - lo) / (hi - lo)) * ch;

  // Grid and labels.
  g.lineWidth = 1;
  g.strokeStyle = GRID;
  g.fillStyle = INK;
  g.textAlign = 'right';
  g.textBaseline = 'middle';
  const digits = step < 1 ? Math.min(3, Math.ceil(-Math.log10(step))) : 0;
  for (let v = lo; v <= hi + step / 2; v += step) {
    const yy = Math.round(y(v)) + 0.5;
    g.beginPath(); g.moveTo(pad.l, yy); g.lineTo(w - pad.r, yy); g.stroke();
    g.fillText(v.toFixed(digits), pad.l - 8, yy);
  }
  g.textAlign = 'center';
  g.textBaseline = 'top';
  const every = windowMs >= 60000 ? 15000 : 5000;
  for (let s = 0; s <= windowMs; s += every) {
    const xx = Math.round(x(t1 - s)) + 0.5;
    g.beginPath(); g.moveTo(xx, pad.t); g.lineTo(xx, pad.t + ch); g.stroke();
    g.fillText(s === 0 ? 'now' : `-${s / 1000}s`, xx, pad.t + ch + 7);
  }

  // The series: a soft fill under a solid line, and the newest point.
  g.save();
  g.beginPath();
  g.rect(pad.l, pad.t, cw, ch);
  g.clip();
  const line = new Path2D();
  shown.forEach((p, i) => (i ? line.lineTo(x(p.t), y(p.v)) : line.moveTo(x(p.t), y(p.v))));
  const fill = new Path2D(line);
  fill.lineTo(x(shown[shown.length - 1].t), pad.t + ch);
  fill.lineTo(x(shown[0].t), pad.t + ch);
  fill.closePath();
  const grad = g.createLinearGradient(0, pad.t, 0, pad.t + ch);
  grad.addColorStop(0, color + '40');
  grad.addColorStop(1, color + '05');
  g.fillStyle = grad;
  g.fill(fill);
  g.strokeStyle = color;
  g.lineWidth = 2;
  g.lineJoin = 'round';
  g.stroke(line);
  g.restore();
  const last = shown[shown.length - 1];
  g.fillStyle = color;
  g.beginPath();
  g.arc(x(last.t), y(last.v), 4, 0, Math.PI * 2);
  g.fill();
}
