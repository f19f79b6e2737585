/**
 * Remembers, per origin, the transport that last proved itself, so that the next client
 * starts there instead of waiting for the same proof timeouts again. Entries older than `ttl`
 * are ignored: networks change (a laptop leaves the office proxy behind).
 * Storage errors (quota, privacy modes, sandboxed frames) only disable the storage; an
 * in-process copy still serves the reconnects of this client.
 *
 * @param {string} key @param {number} ttl ms; 0 remembers nothing
 * @param {import('./index.js').StorageLike | null} storage @param {() => number} now
 */
export function memory(key, ttl, storage, now) {
  /** @type {{t: string, at: number} | null} */
  let local = null;
  return {
    /** @returns {string | null} */
    get() {
      let e = local;
      try { e = JSON.parse(/** @type {string} */ (storage?.getItem(key))) ?? e; } catch {}
      return ttl && typeof e?.t === 'string' && now() - e.at < ttl ? e.t : null;
    },
    /** @param {string} transport */
    set(transport) {
      if (!ttl) return;
      local = { t: transport, at: now() };
      try { storage?.setItem(key, JSON.stringify(local)); } catch {}
    },
  };
}
