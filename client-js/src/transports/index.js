import { websocket } from './websocket.js';
import { sse } from './sse.js';
import { longpoll } from './longpoll.js';

/**
 * @typedef {import('./index.js').TransportOptions} TransportOptions
 * @typedef {(o: TransportOptions) => import('./index.js').Transport} TransportFactory
 */

/**
 * The transports by name: the factory, the platform constructor it can't work without,
 * whether subscriptions change in band (others need a new attachment with a new cursor),
 * and whether it is polled (heartbeats arrive per response, not on a clock).
 */
export const transports = {
  websocket: { create_: websocket, needs_: 'WebSocket', live_: true },
  sse: { create_: sse, needs_: 'EventSource' },
  longpoll: { create_: longpoll, needs_: 'fetch', polled_: true },
};
