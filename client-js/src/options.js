/**
 * @typedef {import('./index.js').FerryOptions} FerryOptions
 * @typedef {{
 *   transports: import('./index.js').TransportName[], token: FerryOptions['token'],
 *   proofTimeout: number, requestTimeout: number, maxQueue: number, sendTimeout: number,
 *   transportMemory: import('./index.js').TransportMemory | undefined, pollHold: number | undefined, autoConnect: boolean,
 *   backoff: Required<import('./index.js').Backoff>, upgradeProbe: Required<import('./index.js').Backoff>,
 *   buffering: Required<import('./index.js').BufferingOptions> | false,
 * }} Options every option the client reads, with its default filled in
 * @typedef {{
 *   fetch: import('./index.js').FetchLike,
 *   setTimeout(fn: () => void, ms: number): unknown, clearTimeout(id: unknown): void, now(): number,
 *   WebSocket: any, EventSource: any,
 * }} Platform what the client uses of its platform: injected, or the globals
 */

const g = /** @type {any} */ (globalThis);

// Every default in one place; see index.d.ts for what each option means.
const DEFAULTS = {
  transports: ['websocket', 'sse', 'longpoll'],
  proofTimeout: 3000,
  requestTimeout: 15000,
  backoff: { min: 250, max: 15000 },
  upgradeProbe: { min: 5000, max: 300000 },
  maxQueue: 1000,
  sendTimeout: 30000,
  buffering: { slack: 2000, pings: 3, ratio: 0.25 },
  autoConnect: true,
};

/** @param {FerryOptions} options @returns {Options} */
export function withDefaults(options) {
  const o = /** @type {any} */ ({ ...DEFAULTS, ...options });
  o.backoff = { ...DEFAULTS.backoff, ...options.backoff };
  o.upgradeProbe = { ...DEFAULTS.upgradeProbe, ...options.upgradeProbe };
  if (o.buffering) o.buffering = { ...DEFAULTS.buffering, ...o.buffering };
  return o;
}

/**
 * Platform functions are called as plain functions: a browser's window.fetch or setTimeout
 * called as a method of another object throws "Illegal invocation". An option set to null
 * (WebSocket, EventSource, fetch) removes what needs it.
 * @param {FerryOptions} options @returns {Platform}
 */
export function platform(options) {
  const { fetch = g.fetch, setTimeout: st = g.setTimeout, clearTimeout: ct = g.clearTimeout } = options;
  /** @param {'WebSocket' | 'EventSource'} k */
  const given = (k) => (k in options ? options[k] : g[k]);
  return {
    // Missing (null or no global): a round says so (no-transport).
    fetch: /** @type {import('./index.js').FetchLike} */ (fetch && ((u, i) => fetch(u, i))),
    setTimeout: (f, ms) => st(f, ms),
    clearTimeout: (id) => id != null && ct(id),
    now: options.now ?? Date.now,
    WebSocket: given('WebSocket'),
    EventSource: given('EventSource'),
  };
}

/** @param {FerryOptions['debug']} debug @returns {(...args: unknown[]) => void} */
export const logger = (debug) => (debug === true ? (...a) => console.debug('[ferry]', ...a) : debug || (() => {}));
