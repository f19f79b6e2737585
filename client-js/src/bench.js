import { FerryError } from './errors.js';

/**
 * The transports that kept failing. A transport is benched when one of its attachments
 * breaks with 1007/1002, or when a stream (WebSocket, SSE) breaks twice in a row at the same
 * position with no heartbeat in between (the same message kills it at each replay). Rounds
 * try benched transports last; the background upgrade probe still tries them after its
 * backoff, from positions that have moved on meanwhile, and a probe that proves one lifts
 * its bench (`lift`).
 */
export class Bench {
  /** @type {Set<string>} */
  #benched = new Set();
  /** @type {Map<string, string>} */
  #brokeAt = new Map(); // transport → the cursor at its last loss

  /** @param {string} name */
  has(name) { return this.#benched.has(name); }

  /** @param {string} name */
  lift(name) { this.#benched.delete(name); }

  /**
   * An attachment of `name` broke with `code` at cursor `at`; returns the error that tells
   * the app it is benched now, or null.
   * @param {string} name @param {number} code @param {string} at
   * @param {boolean} stream a WebSocket or SSE that broke without a heartbeat (a poll that a
   *   proxy cuts breaks without one too; only a stream can be killed by a frame)
   */
  judge(name, code, at, stream) {
    const again = stream && this.#brokeAt.get(name) === at;
    this.#brokeAt.set(name, at);
    if ((!again && code !== 1007 && code !== 1002) || this.#benched.has(name)) return null;
    this.#benched.add(name);
    return new FerryError(code, `${name} ${again ? 'failed twice at the same position' : `failed with ${code}`}: trying the other transports first`);
  }
}
