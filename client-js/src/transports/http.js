import { FerryError } from '../errors.js';

/**
 * @typedef {import('./index.js').TransportOptions} TransportOptions
 * @typedef {import('./index.js').Frame} Frame
 */

/**
 * The absolute URL of an endpoint under base, with the params that are set.
 * @param {string} base @param {string} path @param {Record<string, unknown>} params
 */
export function url(base, path, params) {
  const u = new URL(base + path);
  for (const k in params) if (params[k] != null) u.searchParams.set(k, String(params[k]));
  return u.href;
}

/**
 * The URL of an attachment: the session, the cursor as it is now, and the attachment's order
 * and what it replaces (PROTOCOL.md §2).
 * @param {TransportOptions} o @param {string} path @param {Record<string, unknown>} params
 */
export const attachUrl = (o, path, params) =>
  url(o.base_, path, { session: o.session_, cursor: o.cursor_(), att: o.att_, from: o.from_, reason: o.reason_, ...params });

/** @param {string | null | undefined} token @returns {Record<string, string>} */
const auth = (token) => (token ? { Authorization: `Bearer ${token}` } : {});

/**
 * Parses one frame; null for anything that isn't a frame (the caller drops the transport).
 * @param {unknown} text @returns {Frame | null}
 */
export function parse(text) {
  try {
    const f = JSON.parse(/** @type {string} */ (text));
    return typeof f?.t === 'string' ? f : null;
  } catch {
    return null;
  }
}

/**
 * One HTTP request with a deadline, with the token as a Bearer header: a POST of `body` as
 * JSON, or a GET without one. Resolves with the JSON body, or null for 204. Rejects with a
 * FerryError: the close code of an error body (PROTOCOL.md §4), or 'network' for anything a
 * proxy or the network did (no response, a gateway error page).
 * @param {Pick<TransportOptions, 'fetch' | 'setTimeout' | 'clearTimeout'>} env
 * @param {string} href @param {string | null | undefined} token @param {object | undefined} body
 * @param {number} timeout
 * @returns {Promise<any>}
 */
export async function call(env, href, token, body, timeout, ctl = new AbortController()) {
  const timer = env.setTimeout(() => ctl.abort(), timeout);
  const headers = auth(token);
  try {
    const res = await env.fetch(href, body
      ? { method: 'POST', headers: { 'Content-Type': 'application/json', ...headers }, body: JSON.stringify(body), signal: ctl.signal }
      : { headers, signal: ctl.signal });
    if (res.status === 204) return null;
    /** @type {any} */
    const json = await res.json().catch(() => null);
    if (res.ok && json) return json;
    throw typeof json?.code === 'number'
      ? new FerryError(json.code, String(json.reason ?? ''))
      : new FerryError('network', `HTTP ${res.status}`);
  } catch (e) {
    throw e instanceof FerryError ? e : new FerryError('network', String(/** @type {any} */ (e)?.message ?? e));
  } finally {
    env.clearTimeout(timer);
  }
}

/**
 * POST /send: upstream frames for the transports without a channel of their own upstream.
 * @param {TransportOptions} o @param {Frame[]} frames @returns {Promise<Frame[]>}
 */
export async function post(o, frames) {
  const body = await call(o, url(o.base_, '/send', { session: o.session_ }), o.token_, { frames }, o.timeout_);
  return body?.acks ?? [];
}
