import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Clock, FakeServer, until } from './fakes.js';

async function connected(mode = {}, opts) {
  const clock = new Clock();
  const server = new FakeServer(clock);
  Object.assign(server.mode, mode);
  const ferry = server.client({ buffering: false, upgradeProbe: { min: 1e9, max: 1e9 }, ...opts });
  await until(() => ferry.state === 'connected');
  return { clock, server, ferry };
}

const cursorOf = (server, i = -1) => {
  const c = server.conns.at(i);
  return c.params?.get?.('cursor');
};

test('messages arrive with their channel position as meta; the position follows', async () => {
  const { server, ferry } = await connected();
  const got = [];
  const sub = ferry.subscribe('room:a', (d, meta) => got.push([d, meta]));
  const events = [];
  sub.on('subscribed', (p) => events.push(p));
  await until(() => sub.state === 'subscribed');
  assert.deepEqual(events, [{ epoch: 'e1', offset: 0 }]);
  server.publish('room:a', { n: 1 });
  server.publish('room:a', { n: 2 });
  assert.deepEqual(got, [
    [{ n: 1 }, { channel: 'room:a', epoch: 'e1', offset: 1 }],
    [{ n: 2 }, { channel: 'room:a', epoch: 'e1', offset: 2 }],
  ]);
  assert.deepEqual(sub.position, { epoch: 'e1', offset: 2 });
  ferry.close();
});

test('duplicates by position are dropped (offset at or before the current one, same epoch)', async () => {
  const { server, ferry } = await connected();
  const got = [];
  const all = [];
  ferry.subscribe('room:a', (d) => got.push(d));
  ferry.on('message', (m) => all.push(m.data));
  await until(() => server.att.subs.has('room:a'));
  const m1 = server.publish('room:a', 'a');
  const m2 = server.publish('room:a', 'b');
  server.att.push(m1);
  server.att.push(m2);
  server.publish('room:a', 'c');
  assert.deepEqual(got, ['a', 'b', 'c']);
  assert.deepEqual(all, ['a', 'b', 'c'], 'the message event sees no duplicate either');
  ferry.close();
});

test('after a drop the client resumes from its positions and gets exactly what it missed', async () => {
  const { clock, server, ferry } = await connected();
  const got = [];
  ferry.subscribe('room:a', (d) => got.push(d));
  ferry.subscribe('room:b', () => {});
  await until(() => server.att.subs.has('room:a'));
  server.publish('room:a', 1);
  server.att.cut();
  server.publish('room:a', 2);
  server.publish('room:a', 3);
  await clock.tick(250);
  await until(() => ferry.state === 'connected' && server.conns.length === 2);
  assert.equal(cursorOf(server), 'room:a=e1.1,room:b=e1.0');
  server.publish('room:a', 4);
  assert.deepEqual(got, [1, 2, 3, 4]);
  ferry.close();
});

test('a reset is surfaced with the new position when history no longer covers the gap', async () => {
  const { clock, server, ferry } = await connected();
  const got = [];
  const resets = [];
  const sub = ferry.subscribe('room:a', (d) => got.push(d));
  sub.on('reset', (r) => resets.push(r));
  await until(() => server.att.subs.has('room:a'));
  server.publish('room:a', 1);
  server.att.cut();
  server.newEpoch('room:a', 'e2');
  server.publish('room:a', 'x');
  server.publish('room:a', 'y');
  await clock.tick(250);
  await until(() => ferry.state === 'connected');
  assert.deepEqual(resets, [{ epoch: 'e2', offset: 2, reason: 'history lost' }]);
  assert.deepEqual(sub.position, { epoch: 'e2', offset: 2 });
  server.publish('room:a', 'z');
  assert.deepEqual(got, [1, 'z']);
  ferry.close();
});

test('subscribe can start from a known position (since)', async () => {
  const { server, ferry } = await connected();
  for (let i = 1; i <= 5; i++) server.publish('room:a', i);
  const got = [];
  ferry.subscribe('room:a', (d) => got.push(d), { since: { epoch: 'e1', offset: 3 } });
  await until(() => got.length === 2);
  assert.deepEqual(got, [4, 5]);
  const sent = server.sockets[0].sent.find((f) => f.t === 'sub');
  assert.deepEqual(sent, { t: 'sub', ch: 'room:a', ep: 'e1', off: 3 });
  ferry.close();
});

test('on a WebSocket subscription changes go in band as sub and unsub frames', async () => {
  const { server, ferry } = await connected();
  const a = ferry.subscribe('room:a');
  ferry.subscribe('room:b');
  await until(() => server.att.subs.size === 2);
  a.unsubscribe();
  await until(() => server.att.subs.size === 1);
  assert.deepEqual(server.sockets[0].sent.map((f) => `${f.t} ${f.ch}`), ['sub room:a', 'sub room:b', 'unsub room:a']);
  assert.equal(server.conns.length, 1, 'no new attachment');
  assert.equal(a.state, 'unsubscribed');
  ferry.close();
});

test('on SSE a subscription change is a new attachment; changes of one tick make one', async () => {
  const { server, ferry } = await connected({ websocket: 'fail' });
  assert.equal(ferry.transport, 'sse');
  const got = [];
  ferry.subscribe('room:a', (d) => got.push(d));
  ferry.subscribe('room:b');
  ferry.subscribe('room:c').unsubscribe();
  await until(() => server.conns.length === 2 && ferry.state === 'connected');
  await until(() => true);
  assert.equal(server.conns.length, 2);
  assert.equal(cursorOf(server), 'room:a=,room:b=');
  assert.equal(new URL(server.streams.at(-1).url).searchParams.get('cursor'), 'room:a=,room:b=');
  server.publish('room:a', 1);
  assert.deepEqual(got, [1]);
  assert.equal(ferry.transport, 'sse');
  ferry.close();
});

test('a server unsub ends the subscription with its code', async () => {
  const { server, ferry } = await connected();
  const sub = ferry.subscribe('secret:x');
  const seen = [];
  sub.on('unsubscribed', (e) => seen.push(e));
  sub.on('error', (e) => seen.push(e.code));
  await until(() => server.att.subs.has('secret:x'));
  server.att.push({ t: 'unsub', ch: 'secret:x', code: 4103, reason: 'forbidden' });
  assert.deepEqual(seen, [4103, { code: 4103, reason: 'forbidden' }]);
  assert.equal(ferry.subscription('secret:x'), undefined);
  assert.equal(ferry.state, 'connected');
  ferry.close();
});

test('binary payloads arrive as Uint8Array', async () => {
  const { server, ferry } = await connected();
  const got = [];
  ferry.subscribe('bin', (d) => got.push(d));
  await until(() => server.att.subs.has('bin'));
  server.att.push({ t: 'msg', ch: 'bin', ep: 'e1', off: 1, b: Buffer.from([0, 1, 255]).toString('base64') });
  assert.deepEqual(got, [new Uint8Array([0, 1, 255])]);
  ferry.close();
});

test('subscribing twice to a channel throws', async () => {
  const { ferry } = await connected();
  ferry.subscribe('room:a');
  assert.throws(() => ferry.subscribe('room:a'), /already subscribed/);
  ferry.close();
});

test('a resubscribe on SSE waits for the positions of channels still being confirmed', async () => {
  const clock = new Clock();
  const server = new FakeServer(clock);
  server.mode.websocket = 'fail';
  server.publish('a', 'before');
  const ferry = server.client({ buffering: false, upgradeProbe: { min: 1e9, max: 1e9 } });
  const got = [];
  ferry.subscribe('a', (d) => got.push(d));
  // Subscribing from the connected handler runs between the hello and the sub frame of 'a'.
  ferry.on('state', ({ state }) => {
    if (state === 'connected' && !ferry.subscriptions?.has?.('b')) ferry.subscribe('b', () => {});
  });
  await until(() => server.conns.length === 2, 'a resubscribe attachment');
  assert.match(cursorOf(server), /(^|,)a=e1\.1(,|$)/, 'a resumes from its confirmed position, not "from now"');
  server.publish('a', 'after');
  await until(() => got.length === 1);
  assert.deepEqual(got, ['after']);
  ferry.close();
});
