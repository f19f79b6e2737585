/**
 * Remembers, per origin, the transport that last proved itself, so that the next client
 * starts there instead of waiting for the same proof timeouts again. Entries older than `ttl`
 * are ignored: networks change (a laptop leaves the office proxy behind).
 * Storage errors (quota, privacy modes, sandboxed frames) only disable the memory; an
 * in-process copy still serves the reconnects of this client.
 */
export class Memory {
  constructor(key, ttl, storage, now) {
    this._key = key;
    this._ttl = ttl;
    this._storage = storage;
    this._now = now;
    this._local = null;
  }

  /** @returns {string|null} */
  get() {
    if (!this._ttl) return null;
    let e = this._local;
    try {
      const raw = this._storage?.getItem(this._key);
      if (raw) e = JSON.parse(raw);
    } catch {}
    return e && typeof e.t === 'string' && this._now() - e.at < this._ttl ? e.t : null;
  }

  set(transport) {
    if (!this._ttl) return;
    this._local = { t: transport, at: this._now() };
    try { this._storage?.setItem(this._key, JSON.stringify(this._local)); } catch {}
  }
}
