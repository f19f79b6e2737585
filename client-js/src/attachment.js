/**
 * @typedef {import('./index.js').TransportName} TransportName
 * @typedef {import('./subscription.js').Subscription} Subscription
 */

/**
 * Why an attachment is opened. It decides what follows when the attachment fails its proof.
 * @typedef {typeof WALK | typeof BUFFERING | typeof UPGRADE | typeof RESUBSCRIBE | typeof RESUME} Purpose
 */
/** Connecting: on failure try the next transport of the list at once, then back off. */
export const WALK = 'walk';
/** A proxy holds the current stream: swap down, trying each lower transport in turn. */
export const BUFFERING = 'buffering';
/** The background probe of the preferred transport: on failure, stay and probe later. */
export const UPGRADE = 'upgrade';
/** The same transport with a new cursor, for transports that can't change channels in band. */
export const RESUBSCRIBE = 'resubscribe';
/** A swap superseded the current attachment and then failed: the session attaches anew. */
export const RESUME = 'resume';

/**
 * One transport connection of the session: what it carries and where it stands in its proof.
 */
export class Attachment {
  /**
   * @param {number} id its order: the server never lets a lower one take over (`att`)
   * @param {TransportName} name @param {string} reason why this transport, for `transport` events
   * @param {TransportName[]} rest the transports to try next if this one fails its proof
   * @param {Purpose} purpose @param {Iterable<string>} channels
   */
  constructor(id, name, reason, rest, purpose, channels) {
    this.id_ = id;
    this.name_ = name;
    this.reason_ = reason;
    this.rest_ = rest;
    this.purpose_ = purpose;
    /** The channels in its cursor, or subscribed in band since. */
    this.channels_ = new Set(channels);
    /** @type {import('./transports/index.js').Transport | null} set once, when it opens */
    this.transport_ = null;
    /** @type {unknown} */
    this.proofTimer_ = null;
    /** A heartbeat came on it (a stream that broke without one may have been killed by a frame). */
    this.pinged_ = false;
    /** It ended while a swap was being proved, and left what follows to the swap. */
    this.ended_ = false;
    /** A resubscribe waits until every channel it carries has its position. */
    this.syncWhenConfirmed_ = false;
  }

  /**
   * Whether a channel it carries still waits for the position its sub frame brings.
   * @param {Map<string, Subscription>} subs
   */
  unconfirmed_(subs) {
    for (const ch of this.channels_) if (subs.get(ch)?.position === null) return true;
    return false;
  }
}

/**
 * The cursor of a set of channels: each with the position held now (PROTOCOL.md §2).
 * @param {Iterable<string>} channels @param {Map<string, Subscription>} subs
 */
export function cursor(channels, subs) {
  const parts = [];
  for (const ch of channels) {
    const p = subs.get(ch)?.position;
    parts.push(`${ch}=${p ? `${p.epoch}.${p.offset}` : ''}`);
  }
  return parts.join();
}
