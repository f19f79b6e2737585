// A listener that throws must not leave the client half way through a state change, so its
// error is rethrown from a fresh task, where it still reaches the host's error reporting.
const rethrow = (e) => setTimeout(() => { throw e; });

export class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._on = new Map();
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
    if (set) for (const fn of [...set]) try { fn(...args); } catch (e) { rethrow(e); }
  }
}
