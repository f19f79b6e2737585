export class Emitter {
  /** @param {(fn: () => void, ms: number) => unknown} [later] the platform's setTimeout, or an injected one */
  constructor(later = (fn, ms) => setTimeout(fn, ms)) {
    /** @type {Map<string, Set<Function>>} */
    this._on = new Map();
    this._later = later;
  }

  /**
   * A listener that throws must not leave the client half way through a state change, so its
   * error is rethrown from a fresh task, where it still reaches the host's error reporting.
   * @param {unknown} e
   */
  _rethrow(e) {
    this._later(() => { throw e; }, 0);
  }

  on(event, fn) {
    let set = this._on.get(event);
    if (!set) this._on.set(event, (set = new Set()));
    set.add(fn);
    return this;
  }

  off(event, fn) {
    if (fn) this._on.get(event)?.delete(fn);
    else if (event) this._on.delete(event);
    else this._on.clear();
    return this;
  }

  _emit(event, ...args) {
    const set = this._on.get(event);
    if (set) for (const fn of [...set]) try { fn(...args); } catch (e) { this._rethrow(e); }
  }
}
