// The publisher: a Node loop posting to POST /ferry/api/publish at a steady rate, round-robin
// over its channels, each payload carrying a per-channel sequence number. It records what the
// server accepted (seq -> epoch, offset) so that a page's receipts can be checked against it.
import { delay } from './util.js';
import { API_KEY } from './ferry.js';

/**
 * new Publisher({url, channels, rate, active})
 *   url: base of the server (or of the proxy), e.g. http://127.0.0.1:PORT
 *   rate: messages per second over all channels
 *   active(ms since start): false pauses publishing (for idle periods); default always
 * A request refused before it reached the server (connection refused, 502/503/504 from a
 * proxy with no upstream) is retried with the same sequence number: it was not published.
 * A request that failed in a way that leaves it unknown (timeout, reset after sending) is
 * counted as `unknown` and not retried, so no payload is published twice on purpose.
 */
export class Publisher {
  constructor({ url, channels, rate = 20, active = () => true, apiKey = API_KEY, base = '/ferry' }) {
    this.endpoint = `${url}${base}/api/publish`;
    this.channels = channels;
    this.interval = 1000 / rate;
    this.active = active;
    this.apiKey = apiKey;
    this.accepted = new Map(channels.map((c) => [c, new Map()])); // ch -> seq -> {epoch, offset, t}
    this.nextSeq = new Map(channels.map((c) => [c, 1]));
    this.unknown = []; // {ch, seq, error}
    this.refused = 0; // attempts not delivered (retried)
    this.lastError = null;
    this.running = false;
    this.firstAcceptedAt = null;
    this._loop = null;
  }

  start() {
    if (this.running) return this;
    this.running = true;
    this.startedAt = Date.now();
    this.error = null;
    this._loop = this._run().catch((e) => { this.error = e; });
    return this;
  }

  /** Stops after the request in flight; resolves when the loop has ended. */
  async stop() {
    this.running = false;
    await this._loop;
    if (this.error) throw this.error;
  }

  /** Number of messages the server accepted, over all channels. */
  get count() {
    let n = 0;
    for (const m of this.accepted.values()) n += m.size;
    return n;
  }

  async _run() {
    let i = 0;
    let next = Date.now();
    while (this.running) {
      const now = Date.now();
      // Keep a steady rate without bursting to catch up after a long stall (a restart).
      if (next < now - 1000) next = now;
      if (next > now) await delay(next - now);
      next += this.interval;
      if (!this.running) break;
      if (!this.active(Date.now() - this.startedAt)) continue;
      const ch = this.channels[i % this.channels.length];
      const seq = this.nextSeq.get(ch);
      const r = await this._publish(ch, seq);
      if (r === 'retry') continue; // same channel and seq next tick
      this.nextSeq.set(ch, seq + 1);
      i++;
    }
  }

  async _publish(ch, seq) {
    let res;
    try {
      res = await fetch(this.endpoint, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${this.apiKey}` },
        body: JSON.stringify({ channel: ch, data: { seq, ch, at: Date.now() } }),
        signal: AbortSignal.timeout(5000),
      });
    } catch (e) {
      const code = e.cause?.code || e.name;
      this.lastError = `${code}: ${e.message}`;
      if (code === 'ECONNREFUSED') {
        this.refused++;
        return 'retry';
      }
      this.unknown.push({ ch, seq, error: this.lastError });
      return 'unknown';
    }
    const text = await res.text().catch(() => '');
    if (res.ok) {
      let body;
      try { body = JSON.parse(text); } catch { body = null; }
      if (!body || typeof body.offset !== 'number') {
        this.unknown.push({ ch, seq, error: `bad publish response: ${text.slice(0, 200)}` });
        return 'unknown';
      }
      this.accepted.get(ch).set(seq, { epoch: body.epoch, offset: body.offset, t: Date.now() });
      this.firstAcceptedAt ??= Date.now();
      return 'ok';
    }
    this.lastError = `HTTP ${res.status}: ${text.slice(0, 200)}`;
    if ([502, 503, 504].includes(res.status)) {
      // A proxy without a live upstream, or a server draining: not published.
      this.refused++;
      return 'retry';
    }
    if (res.status >= 500) {
      this.unknown.push({ ch, seq, error: this.lastError });
      return 'unknown';
    }
    // 4xx: the request is wrong (key, body): stop, the scenario reports lastError.
    this.running = false;
    throw new Error(`publish refused: ${this.lastError}`);
  }
}

/** An `active` pattern: `on` ms publishing, then `off` ms quiet, repeated. */
export const bursts = (on, off) => (ms) => ms % (on + off) < on;
