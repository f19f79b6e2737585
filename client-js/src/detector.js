/**
 * Notices a stream that a proxy started to buffer, from the server's heartbeats (ping frames
 * carry a sequence and the server's clock):
 * - late: nothing at all for 2 intervals plus `slack` (any frame counts: under steady
 *   traffic a server may send its pings late, and a stream that flows isn't held);
 * - clumped: the last `pings` pings arrived within `ratio` of the time the server spent
 *   sending them, so something held them and let them go together.
 * A long-poll hears from the server at least once per hold (its pings come only when a hold
 * expires), so polls use only the lateness rule, with the hold as the interval.
 * Both rules ignore what follows a sleep of this process (a frozen tab, a suspended laptop):
 * the silence was ours, and the pings held meanwhile arrive together.
 */
export class Detector {
  #o;
  #clock;
  #onBuffering;
  /** @type {[arrival: number, sent: number][]} the last pings */
  #seen = [];
  /** @type {unknown} */
  #timer = null;
  #due = 0; // when the lateness timer should fire
  #woke = -Infinity; // when this process last woke from a sleep

  /**
   * @param {{interval: number, clumps: boolean, slack: number, pings: number, ratio: number}} o
   * @param {{now(): number, setTimeout(fn: () => void, ms: number): unknown, clearTimeout(id: unknown): void}} clock
   * @param {(why: 'late' | 'clumped') => void} onBuffering
   */
  constructor(o, clock, onBuffering) {
    this.#o = o;
    this.#clock = clock;
    this.#onBuffering = onBuffering;
    this.#arm();
  }

  /** A ping frame arrived. @param {number} ts the server's clock (as sent: not trusted to be a number) */
  ping(ts) {
    const o = this.#o;
    const now = this.#clock.now();
    // A ping long after the lateness timer should have fired: this process slept.
    if (now - this.#due > o.slack) this.#woke = now;
    this.alive();
    if (now - this.#woke < o.interval) return void (this.#seen = []);
    if (!o.clumps || !(ts > 0)) return;
    const s = this.#seen;
    if (s.push([now, ts]) > o.pings) s.shift();
    if (s.length < o.pings || s.length < 2) return;
    const sent = ts - s[0][1];
    // Pings sent less than half an interval apart are a server catching up, not a proxy.
    if (sent >= (o.interval * (s.length - 1)) / 2 && now - s[0][0] < sent * o.ratio) this.#fire('clumped');
  }

  /** Any sign of life resets the lateness clock. */
  alive() {
    if (this.#timer !== null) this.#arm();
  }

  stop() {
    this.#clock.clearTimeout(this.#timer);
    this.#timer = null;
  }

  #arm() {
    const c = this.#clock;
    c.clearTimeout(this.#timer);
    const wait = 2 * this.#o.interval + this.#o.slack;
    const due = (this.#due = c.now() + wait);
    this.#timer = c.setTimeout(() => {
      // A timer that fires far too late: this process slept.
      if (c.now() - due > this.#o.slack) {
        this.#woke = c.now();
        this.#arm();
      } else this.#fire('late');
    }, wait);
  }

  /** @param {'late' | 'clumped'} why */
  #fire(why) {
    this.stop();
    this.#onBuffering(why);
  }
}
