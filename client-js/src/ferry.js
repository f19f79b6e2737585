import { FerryError } from './errors.js';
import { Subscription } from './subscription.js';
import { payload } from './codec.js';
import { Attachments } from './attachments.js';

/**
 * @typedef {import('./transports/index.js').Frame} Frame
 */

/**
 * A Ferry client: one session with the server, carried by the best transport that proves
 * itself, moving between transports (down when a proxy starts to buffer, up when a background
 * probe proves a better one) without losing or repeating a message.
 *
 * The session is built in layers, one concern per file: connection.js (negotiation, rounds,
 * backoff: the state machine's phases), attachments.js (the transports' proofs and the swaps
 * while connected), and here what the app calls: subscriptions and upstream.
 */
export class Ferry extends Attachments {
  /**
   * @param {string} channel
   * @param {(data: any, meta: import('./index.js').MessageMeta) => void} [onMessage]
   * @param {import('./index.js').SubscribeOptions} [options]
   */
  subscribe(channel, onMessage, { since } = {}) {
    const subs = this.subs_;
    if (subs.has(channel)) throw new FerryError('already-subscribed', `already subscribed to ${channel}`);
    const max = this.negotiated_?.limits?.maxChannels;
    if (max && subs.size >= max) throw new FerryError(4100, `at most ${max} channels per session`);
    const sub = new Subscription(this, channel, onMessage, since);
    subs.set(channel, sub);
    this.changed_();
    return sub;
  }

  /** The active subscription to a channel, if any. @param {string} channel */
  subscription(channel) { return this.subs_.get(channel); }

  /** @param {string} channel @param {unknown} value @returns {Promise<import('./index.js').Position | null>} */
  publish(channel, value) { return this.#push({ t: 'pub', ch: channel, ...payload(value) }); }

  /** @param {unknown} value @returns {Promise<void>} */
  send(value) { return this.#push({ t: 'send', ...payload(value) }); }

  /** @param {Frame} frame */
  #push(frame) {
    if (this.state === 'disconnected') return Promise.reject(new FerryError('closed', 'client is closed', 'not-sent'));
    return this.upstream_.push_(frame);
  }

  /** Subscription.unsubscribe. @param {Subscription} sub */
  unsubscribe_(sub) {
    if (this.subs_.get(sub.channel) !== sub) return;
    this.subs_.delete(sub.channel);
    this.changed_();
  }
}
