// The entry `@ferryrt/client/memory` (from a Ferry server: /ferry/memory.js):
//
//   import { rememberTransport } from '@ferryrt/client/memory';
//   new Ferry(url, { transportMemory: rememberTransport() });
//
// A separate entry, so that apps that don't remember pay nothing for it; it imports nothing.

/**
 * Remembers, per origin, the transport that last proved itself, so that the next client
 * starts there instead of waiting for the same proof timeouts again. Entries older than `ttl`
 * are ignored: networks change (a laptop leaves the office proxy behind).
 * Storage errors (quota, privacy modes, sandboxed frames) only disable the storage; an
 * in-process copy still serves the reconnects of the clients that use this memory.
 *
 * @param {{ ttl?: number, storage?: import('./index.js').StorageLike | null, now?: () => number }} [options]
 *   ttl: ms (default 600000; 0 remembers nothing); storage: default localStorage, null keeps
 *   it in this page
 * @returns {import('./index.js').TransportMemory}
 */
export function rememberTransport({ ttl = 600000, storage = localStorage(), now = Date.now } = {}) {
  /** @type {Map<string, {t: string, at: number}>} key → the last entry set here */
  const local = new Map();
  /** @param {string} base */
  const key = (base) => `ferry:transport:${new URL(base).origin}`;
  return {
    get(base) {
      const k = key(base);
      let e = local.get(k);
      try { e = JSON.parse(/** @type {string} */ (storage?.getItem(k))) ?? e; } catch {}
      return ttl && typeof e?.t === 'string' && now() - e.at < ttl ? /** @type {any} */ (e.t) : null;
    },
    set(base, transport) {
      if (!ttl) return;
      const k = key(base);
      const e = { t: transport, at: now() };
      local.set(k, e);
      try { storage?.setItem(k, JSON.stringify(e)); } catch {}
    },
  };
}

/** The platform's localStorage, which throws in sandboxed frames and some privacy modes. */
function localStorage() {
  try { return /** @type {any} */ (globalThis).localStorage ?? null; } catch { return null; }
}
