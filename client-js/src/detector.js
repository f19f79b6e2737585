/**
 * Notices a stream that a proxy started to buffer, from the server's heartbeats (ping frames
 * carry a sequence and the server's clock):
 * - late: nothing at all for 2 intervals plus `slack` (any frame counts: under steady
 *   traffic a server may send its pings late, and a stream that flows isn't held);
 * - clumped: the last `pings` pings arrived within `ratio` of the time the server spent
 *   sending them, so something held them and let them go together.
 * A long-poll hears from the server at least once per hold (its pings come only when a hold
 * expires), so polls use only the lateness rule, with the hold as the interval.
 */
export class Detector {
  /**
   * @param {{interval: number, clumps: boolean, slack: number, pings: number, ratio: number}} o
   * @param {{now(): number, setTimeout: Function, clearTimeout: Function}} clock
   * @param {(why: string) => void} onBuffering
   */
  constructor(o, clock, onBuffering) {
    this._o = o;
    this._c = clock;
    this._cb = onBuffering;
    this._seen = []; // [arrival, server ts] of the last pings
    this._timer = null;
    this._due = 0;
    this._woke = -Infinity; // when this process last woke from a sleep
    this._arm();
  }

  /** A ping frame arrived. */
  ping(ts) {
    const now = this._c.now();
    // A ping that comes long after the lateness timer should have fired means this process
    // slept (a frozen tab, a suspended laptop) and the pings held meanwhile arrive together:
    // for one interval after waking up, arrivals say nothing about a proxy.
    if (now - this._due > this._o.slack) this._woke = now;
    this.alive();
    if (now - this._woke < this._o.interval) return void (this._seen = []);
    if (!this._o.clumps || !(ts > 0)) return;
    const s = this._seen;
    s.push([now, ts]);
    if (s.length > this._o.pings) s.shift();
    if (s.length < this._o.pings || s.length < 2) return;
    const sent = s[s.length - 1][1] - s[0][1];
    const got = s[s.length - 1][0] - s[0][0];
    // Pings sent less than half an interval apart are a server catching up, not a proxy.
    if (sent >= (this._o.interval * (s.length - 1)) / 2 && got < sent * this._o.ratio) {
      this._fire('clumped');
    }
  }

  /** Any sign of life that resets the lateness clock. */
  alive() {
    if (this._timer !== null) this._arm();
  }

  stop() {
    this._c.clearTimeout(this._timer);
    this._timer = null;
  }

  _arm() {
    this._c.clearTimeout(this._timer);
    const wait = 2 * this._o.interval + this._o.slack;
    const due = (this._due = this._c.now() + wait);
    this._timer = this._c.setTimeout(() => {
      // A timer that fires far too late means this process was asleep (a frozen tab, a
      // suspended laptop): the silence is ours, not the proxy's.
      if (this._c.now() - due > this._o.slack) {
        this._woke = this._c.now();
        this._arm();
      }
      else this._fire('late');
    }, wait);
  }

  _fire(why) {
    this.stop();
    this._cb(why);
  }
}
