import { FerryError } from '../errors.js';

/** The absolute URL of an endpoint under base, with the params that are set. */
export function url(base, path, params) {
  const u = new URL(base + path);
  for (const k in params) if (params[k] != null) u.searchParams.set(k, params[k]);
  return u.href;
}

export const auth = (token) => (token ? { Authorization: `Bearer ${token}` } : {});

/** Parses one frame; null for anything that isn't a frame (the caller drops the transport). */
export function parse(text) {
  try {
    const f = JSON.parse(text);
    return f && typeof f.t === 'string' ? f : null;
  } catch {
    return null;
  }
}

/**
 * One HTTP request with a deadline. Resolves with the JSON body, or null for 204. Rejects
 * with a FerryError: the close code of an error body (PROTOCOL.md §4), or 'network' for
 * anything a proxy or the network did (no response, a gateway error page).
 * @param {{fetch: Function, setTimeout: Function, clearTimeout: Function}} env
 */
export async function call(env, href, init, timeout, ctl = new AbortController()) {
  const timer = env.setTimeout(() => ctl.abort(), timeout);
  try {
    const res = await env.fetch(href, { ...init, signal: ctl.signal });
    if (res.status === 204) return null;
    const body = await res.json().catch(() => null);
    if (res.ok && body) return body;
    throw typeof body?.code === 'number'
      ? new FerryError(body.code, String(body.reason ?? ''))
      : new FerryError('network', `HTTP ${res.status}`);
  } catch (e) {
    throw e instanceof FerryError ? e : new FerryError('network', String(e?.message ?? e));
  } finally {
    env.clearTimeout(timer);
  }
}

/** POST /send: upstream frames for the transports without a channel of their own upstream. */
export async function post(o, frames) {
  const body = await call(o, url(o.base, '/send', { session: o.session }), {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...auth(o.token) },
    body: JSON.stringify({ frames }),
  }, o.timeout);
  return body?.acks ?? [];
}
