// The entry `@ferryrt/client/presence` (from a Ferry server: /ferry/presence.js): who is
// present on a channel, for subscriptions of a Ferry of the base or the sharing entry.
import type { PresenceMember, Subscription, SubscriptionEvents } from './index.js';

/**
 * Who is present on the subscription's channel now (GET {base}/api/presence), ordered by
 * session. Rejects with a FerryError: 4100 where the server keeps no presence, 4103 where the
 * session may not subscribe, 'closed' before the first negotiation.
 */
export declare function presence(sub: Subscription): Promise<PresenceMember[]>;

export interface PresenceFeedEvents extends SubscriptionEvents {
  /** A session started to be present on the channel. */
  join: (m: PresenceMember) => void;
  /** A session left the channel, or its presence expired. */
  leave: (m: PresenceMember) => void;
}

/** The subscription to a channel's presence feed, `$presence:<channel>`. */
export interface PresenceFeed extends Omit<Subscription, 'on' | 'off'> {
  on<E extends keyof PresenceFeedEvents>(event: E, fn: PresenceFeedEvents[E]): this;
  off<E extends keyof PresenceFeedEvents>(event?: E, fn?: PresenceFeedEvents[E]): this;
}

/**
 * The presence feed of the subscription's channel, subscribed from now on at the first call
 * (later calls return the same feed): its `join` and `leave` events tell who comes and goes.
 * It counts as one more channel, a reconnect replays what it missed, and it ends with the
 * subscription. Throws a FerryError ('closed') for a subscription that has ended.
 */
export declare function presenceFeed(sub: Subscription): PresenceFeed;
