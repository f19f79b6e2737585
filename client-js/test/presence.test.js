import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Clock, FakeServer, until } from './fakes.js';
import { presence, presenceFeed } from '../src/presence.js';

async function connected() {
  const clock = new Clock();
  const server = new FakeServer(clock);
  const ferry = server.client({ buffering: false, upgradeProbe: { min: 1e9, max: 1e9 } });
  await until(() => ferry.state === 'connected');
  return { server, ferry };
}

test('presenceFeed subscribes $presence:<channel> once; its join and leave events carry members', async () => {
  const { server, ferry } = await connected();
  const room = ferry.subscribe('room:a', () => {});
  const feed = presenceFeed(room);
  assert.equal(presenceFeed(room), feed, 'the same feed');
  assert.equal(ferry.subscription('$presence:room:a'), feed);
  const events = [];
  feed.on('join', (m) => events.push(['join', m]));
  feed.on('leave', (m) => events.push(['leave', m]));
  await until(() => feed.state === 'subscribed');
  server.publish('$presence:room:a', { event: 'join', session: 's2', user: 'bob' });
  server.publish('$presence:room:a', { event: 'leave', session: 's2' });
  server.publish('$presence:room:a', { event: 'other', session: 's3' });
  assert.deepEqual(events, [['join', { session: 's2', user: 'bob' }], ['leave', { session: 's2', user: undefined }]]);
  ferry.close();
});

test('the feed ends with its subscription; an ended subscription has none', async () => {
  const { ferry } = await connected();
  const room = ferry.subscribe('room:a', () => {});
  const feed = presenceFeed(room);
  room.unsubscribe();
  assert.equal(feed.state, 'unsubscribed');
  assert.equal(ferry.subscription('$presence:room:a'), undefined);
  assert.throws(() => presenceFeed(room), (e) => e.name === 'FerryError' && e.code === 'closed');
  ferry.close();
});

test('presence() before the first negotiation rejects with closed', async () => {
  const server = new FakeServer(new Clock());
  const ferry = server.client({ autoConnect: false });
  const room = ferry.subscribe('room:a', () => {});
  await assert.rejects(presence(room), (e) => e.name === 'FerryError' && e.code === 'closed');
});
