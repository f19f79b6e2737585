import { Emitter } from './emitter.js';
import { FerryError } from './errors.js';

/**
 * One channel the client follows, and its position in it. The position is the client's
 * half of the resume rule (PROTOCOL.md §1): every attachment carries it in the cursor, and
 * anything at or before it is a duplicate from an overlapping attachment and is dropped.
 */
export class Subscription extends Emitter {
  constructor(ferry, channel, onMessage, since) {
    super(ferry._env.setTimeout);
    this.channel = channel;
    /** @type {{epoch: string, offset: number} | null} */
    this.position = since ? { epoch: since.epoch, offset: since.offset } : null;
    /** @type {'subscribing' | 'subscribed' | 'unsubscribed'} */
    this.state = 'subscribing';
    this._ferry = ferry;
    this._fn = onMessage;
  }

  /** Listening to 'join' or 'leave' subscribes to the channel's presence feed. */
  on(event, fn) {
    super.on(event, fn);
    if ((event === 'join' || event === 'leave') && !this._feed && this.state !== 'unsubscribed') {
      this._feed = this._ferry.subscribe(`$presence:${this.channel}`, (e) => {
        if (e?.event === 'join' || e?.event === 'leave') this._emit(e.event, { session: e.session, user: e.user });
      });
    }
    return this;
  }

  /** Who is present on the channel now. */
  presence() { return this._ferry._presence(this.channel); }

  unsubscribe() {
    if (this.state === 'unsubscribed') return;
    this._feed?.unsubscribe();
    this._ferry._unsubscribe(this);
    this._end(1000, 'unsubscribed');
  }

  _end(code, reason) {
    this.state = 'unsubscribed';
    if (code !== 1000) this._emit('error', new FerryError(code, reason));
    this._emit('unsubscribed', { code, reason });
  }

  /** Applies a msg, sub or reset frame; true when a msg was new and delivered. */
  _apply(f, data) {
    const p = this.position;
    // Same epoch and not past our position: old news from an attachment that overlapped.
    const old = p && p.epoch === f.ep && f.off <= p.offset;
    if (f.t !== 'msg') this.state = 'subscribed';
    if (f.t === 'sub') {
      if (!old) this.position = { epoch: f.ep, offset: f.off };
      this._emit('subscribed', { ...this.position });
      return false;
    }
    if (old) return false;
    this.position = { epoch: f.ep, offset: f.off };
    if (f.t === 'reset') {
      this._emit('reset', { epoch: f.ep, offset: f.off, reason: f.reason ?? '' });
      return false;
    }
    if (this._fn) try { this._fn(data, { channel: this.channel, epoch: f.ep, offset: f.off }); } catch (e) { this._rethrow(e); }
    return true;
  }
}
