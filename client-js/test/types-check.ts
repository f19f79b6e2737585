// Compiled by tsc --noEmit (test/types.test.js): the public API as an app uses it. The
// expected errors at the end are misuses the declarations must refuse.
import { Ferry, FerryError, isTerminal, type Position, type Subscription, type TransportEvent } from '../src/index.js';
import { CloseCodes } from '../src/codes.js';
import { rememberTransport } from '../src/memory.js';
import { presence, presenceFeed } from '../src/presence.js';

const ferry = new Ferry('https://example.com/ferry', {
  transports: ['websocket', 'sse', 'longpoll'],
  token: async () => 'token',
  backoff: { min: 100, max: 5000 },
  buffering: { slack: 1000 },
  WebSocket,
  EventSource,
  fetch: (url, init) => fetch(url, init),
  transportMemory: rememberTransport({ ttl: 60000, storage: localStorage }),
  online: window,
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (id) => clearTimeout(id as number),
  debug: (...args) => console.log(...args),
});

ferry.on('state', ({ state, transport, code }) => {
  const s: 'connecting' | 'connected' | 'reconnecting' | 'disconnected' = state;
  const t: 'websocket' | 'sse' | 'longpoll' | null = transport;
  if (typeof code === 'number' && isTerminal(code)) console.log(s, t, CloseCodes[code]?.name);
});
ferry.on('transport', (e: TransportEvent) => console.log(e.from, e.to, e.reason));
ferry.on('error', (e) => console.log(e.code, e.reason));
ferry.on('message', (m) => console.log(m.channel, m.offset, m.data));

interface Chat { text: string }
const sub: Subscription = ferry.subscribe<Chat>('room:lobby', (data, meta) => {
  const text: string = data.text;
  const off: number = meta.offset;
  console.log(text, off, meta.epoch, meta.channel);
}, { since: { epoch: 'k3x9a1', offset: 42 } });
sub.on('reset', ({ epoch, offset, reason }) => console.log(epoch, offset, reason));
sub.on('subscribed', (p: Position) => console.log(p.epoch));
sub.on('unsubscribed', ({ code }) => console.log(code));
sub.on('error', (e: FerryError) => console.log(e.code));
const pos: Position | null = sub.position;
console.log(pos, sub.state, sub.channel, ferry.transport, ferry.sid);

async function upstream() {
  const p: Position | null = await ferry.publish('room:lobby', { text: 'hi' });
  const v: void = await ferry.send({ type: 'move' });
  await ferry.send(new Uint8Array([1, 2]));
  try {
    await ferry.send(1);
  } catch (e) {
    if (e instanceof FerryError && e.code === 'timeout') console.log(p, v);
  }
}
void upstream;
sub.unsubscribe();
ferry.close();

// @ts-expect-error: no such event
ferry.on('connected', () => {});
// @ts-expect-error: state listeners get a StateEvent, not a string
ferry.on('state', (s: string) => s);
// @ts-expect-error: not a transport
new Ferry('/ferry', { transports: ['flash'] });
// @ts-expect-error: the token is a string or a function returning one
new Ferry('/ferry', { token: 42 });
// @ts-expect-error: subscription events are typed too
sub.on('joined', () => {});
// @ts-expect-error: presence events belong to the presence feed
sub.on('join', () => {});
// @ts-expect-error: a join carries a member, not a string
presenceFeed(sub).on('join', (m: string) => m);
presenceFeed(sub).on('join', (m) => m.session.toUpperCase()).on('subscribed', (p) => p.offset);
void (presence(sub) satisfies Promise<{ session: string; user?: string }[]>);
// @ts-expect-error: the position is read-only
sub.position = null;
// @ts-expect-error: offsets are numbers
const bad: Position = { epoch: 'e', offset: '1' };
void bad;

// The sharing entry: the same API, with `share` and `shared`.
import { Ferry as SharedFerry, FerryError as SharedError } from '../src/share.js';
const tab = new SharedFerry('/ferry', { share: true, token: 'x' });
const role: 'leader' | 'follower' | 'off' = tab.shared;
tab.subscribe('room:lobby', () => console.log(role));
const sameError: typeof FerryError = SharedError;
console.log(sameError);
