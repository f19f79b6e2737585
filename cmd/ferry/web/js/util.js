// Small DOM helpers shared by the demo pages. Text always goes in as text, never as HTML.

export const $ = (sel, root = document) => root.querySelector(sel);

/** el('li', {className: 'x', dataset: {a: 1}}, 'text', child) */
export function el(tag, props = {}, ...children) {
  const n = document.createElement(tag);
  const { dataset, ...rest } = props;
  Object.assign(n, rest);
  if (dataset) for (const [k, v] of Object.entries(dataset)) n.dataset[k] = String(v);
  for (const c of children) if (c !== '' && c != null) n.append(c);
  return n;
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

/** 14:03:07.412 */
export function clock(t = new Date()) {
  return `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}.${pad(t.getMilliseconds(), 3)}`;
}

/** "just now", "12 s ago", "3 min ago" */
export function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 5) return 'just now';
  if (s < 90) return `${s} s ago`;
  return `${Math.round(s / 60)} min ago`;
}
