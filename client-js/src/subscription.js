import { Emitter } from './emitter.js';
import { FerryError } from './errors.js';

/**
 * @typedef {import('./index.js').Position} Position
 * @typedef {import('./transports/index.js').Frame} Frame
 */

/**
 * One channel the client follows, and its position in it. The position is the client's
 * half of the resume rule (PROTOCOL.md §1): every attachment carries it in the cursor, and
 * anything at or before it is a duplicate from an overlapping attachment and is dropped.
 */
export class Subscription extends Emitter {
  #onMessage;

  /**
   * @param {import('./ferry.js').Ferry} ferry @param {string} channel
   * @param {((data: any, meta: import('./index.js').MessageMeta) => void) | undefined} onMessage
   * @param {Position | undefined} since
   */
  constructor(ferry, channel, onMessage, since) {
    super(ferry.later_);
    this.channel = channel;
    /** @type {Position | null} */
    this.position = since ? { epoch: since.epoch, offset: since.offset } : null;
    /** @type {'subscribing' | 'subscribed' | 'unsubscribed'} */
    this.state = 'subscribing';
    /** The client it belongs to (presence.js asks the server as its session). */
    this.ferry_ = ferry;
    this.#onMessage = onMessage;
  }

  unsubscribe() {
    if (this.state === 'unsubscribed') return;
    this.ferry_.unsubscribe_(this);
    this.end_(1000, 'unsubscribed');
  }

  /** @param {number} code @param {string} reason */
  end_(code, reason) {
    this.state = 'unsubscribed';
    if (code !== 1000) this.emit_('error', new FerryError(code, reason));
    this.emit_('unsubscribed', { code, reason });
  }

  /**
   * Applies a msg, sub or reset frame; true when a msg was new and delivered.
   * @param {Frame & {ep: string, off: number}} f @param {unknown} data
   */
  apply_(f, data) {
    const p = this.position;
    // Same epoch and not past our position: old news from an attachment that overlapped.
    const old = p && p.epoch === f.ep && f.off <= p.offset;
    if (!old) this.position = { epoch: f.ep, offset: f.off };
    if (f.t !== 'msg') this.state = 'subscribed';
    if (f.t === 'sub') {
      this.emit_('subscribed', { ...this.position });
      return false;
    }
    if (old) return false;
    if (f.t === 'reset') {
      this.emit_('reset', { epoch: f.ep, offset: f.off, reason: f.reason ?? '' });
      return false;
    }
    if (this.#onMessage) this.call_(this.#onMessage, data, { channel: this.channel, epoch: f.ep, offset: f.off });
    return true;
  }
}
