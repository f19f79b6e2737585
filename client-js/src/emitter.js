/**
 * Events of the client and of its subscriptions. A listener that throws must not leave the
 * client half way through a state change, so its error is rethrown from a fresh task, where it
 * still reaches the host's error reporting.
 *
 * Members ending in `_` are internal to the package (build.mjs shortens their names).
 */
export class Emitter {
  /** @type {Map<string, Set<Function>>} */
  #listeners = new Map();

  /** @param {(fn: () => void, ms: number) => unknown} later the platform's setTimeout, or an injected one */
  constructor(later) {
    this.later_ = later;
  }

  /** @param {string} event @param {Function} fn */
  on(event, fn) {
    const set = this.#listeners.get(event) ?? new Set();
    this.#listeners.set(event, set.add(fn));
    return this;
  }

  /** @param {string} [event] @param {Function} [fn] */
  off(event, fn) {
    if (fn) this.#listeners.get(/** @type {string} */ (event))?.delete(fn);
    else if (event) this.#listeners.delete(event);
    else this.#listeners.clear();
    return this;
  }

  /** Calls fn, rethrowing what it throws from a fresh task. @param {Function} fn @param {unknown[]} args */
  call_(fn, ...args) {
    try { fn(...args); } catch (e) { this.later_(() => { throw e; }, 0); }
  }

  /** @param {string} event @param {unknown[]} args */
  emit_(event, ...args) {
    for (const fn of [...(this.#listeners.get(event) ?? [])]) this.call_(fn, ...args);
  }
}
