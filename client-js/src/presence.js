// The entry `@ferryrt/client/presence` (from a Ferry server: /ferry/presence.js): who is
// present on a channel, for subscriptions of a Ferry of the base or the sharing entry.
//
//   import { presence, presenceFeed } from '@ferryrt/client/presence';
//
// A separate entry, so that apps that don't show presence pay nothing for it. Its built
// module imports the base from ./client.js beside it.
import { FerryError } from './errors.js';

/**
 * @typedef {import('./subscription.js').Subscription} Subscription
 * @typedef {import('./index.js').PresenceMember} PresenceMember
 */

/** @type {WeakMap<Subscription, Subscription>} a subscription → its presence feed */
const feeds = new WeakMap();

/**
 * Who is present on the subscription's channel now (GET {base}/api/presence, as the
 * subscription's session), ordered by session. Rejects with a FerryError: 4100 where the
 * server keeps no presence, 4103 where the session may not subscribe, `closed` before the
 * first negotiation.
 * @param {Subscription} sub @returns {Promise<PresenceMember[]>}
 */
export async function presence(sub) {
  const ferry = sub.ferry_;
  if (!ferry.credential_) throw new FerryError('closed', 'no session yet: wait for the connected state');
  const body = await ferry.request_(`/api/presence?${new URLSearchParams({ channel: sub.channel, session: ferry.credential_ })}`);
  return body?.members ?? [];
}

/**
 * The presence feed of the subscription's channel (`$presence:<channel>`), subscribed from
 * now on at the first call: a subscription whose `join` and `leave` events carry a
 * PresenceMember. It counts as one more channel, its events are positioned messages (a
 * reconnect replays what was missed), and it ends with the subscription.
 * @param {Subscription} sub @returns {Subscription}
 */
export function presenceFeed(sub) {
  const known = feeds.get(sub);
  if (known && known.state !== 'unsubscribed') return known;
  if (sub.state === 'unsubscribed') throw new FerryError('closed', `not subscribed to ${sub.channel}`);
  /** @type {Subscription} */
  const feed = sub.ferry_.subscribe(`$presence:${sub.channel}`, (e) => {
    if (e?.event === 'join' || e?.event === 'leave') feed.emit_(e.event, { session: e.session, user: e.user });
  });
  feeds.set(sub, feed);
  sub.on('unsubscribed', () => feed.unsubscribe());
  return feed;
}
