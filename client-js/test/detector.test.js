import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Clock, FakeServer, until } from './fakes.js';
import { Detector } from '../src/detector.js';

const opts = { interval: 1000, slack: 500, pings: 3, ratio: 0.25, clumps: true };

function detector(o = {}) {
  const clock = new Clock();
  const fired = [];
  const d = new Detector({ ...opts, ...o }, clock, (why) => fired.push(why));
  return { clock, d, fired };
}

test('regular pings raise nothing', async () => {
  const { clock, d, fired } = detector();
  for (let i = 0; i < 20; i++) {
    await clock.tick(1000);
    d.ping(clock.now());
  }
  assert.deepEqual(fired, []);
  d.stop();
});

test('late: nothing for two intervals plus slack', async () => {
  const { clock, d, fired } = detector();
  await clock.tick(2499);
  assert.deepEqual(fired, []);
  await clock.tick(1);
  assert.deepEqual(fired, ['late']);
});

test('any sign of life defers lateness', async () => {
  const { clock, d, fired } = detector();
  await clock.tick(2000);
  d.alive();
  await clock.tick(2000);
  assert.deepEqual(fired, []);
  await clock.tick(500);
  assert.deepEqual(fired, ['late']);
});

test('clumped: pings sent an interval apart arrive together', async () => {
  const { clock, d, fired } = detector();
  const t0 = clock.now();
  await clock.tick(1000);
  d.ping(t0);
  d.ping(t0 + 1000);
  assert.deepEqual(fired, []);
  d.ping(t0 + 2000); // three pings spanning 2 s of server time within 0 ms
  assert.deepEqual(fired, ['clumped']);
});

test('jitter is not a clump: arrival within the ratio of the server span is needed', async () => {
  const { clock, d, fired } = detector();
  const t0 = clock.now();
  d.ping(t0);
  await clock.tick(1400);
  d.ping(t0 + 1000);
  await clock.tick(200); // arrivals 1600 ms apart for 2000 ms sent: fine
  d.ping(t0 + 2000);
  assert.deepEqual(fired, []);
  d.stop();
});

test('pings sent close together (a server catching up) are not a clump', async () => {
  const { d, fired, clock } = detector();
  const t0 = clock.now();
  d.ping(t0);
  d.ping(t0 + 10);
  d.ping(t0 + 20);
  assert.deepEqual(fired, []);
  d.stop();
});

test('the clump rule can be off (long-polling)', async () => {
  const { clock, d, fired } = detector({ clumps: false });
  const t0 = clock.now();
  d.ping(t0);
  d.ping(t0 + 1000);
  d.ping(t0 + 2000);
  assert.deepEqual(fired, []);
  d.stop();
});

test('a timer that fires far too late means we slept; no verdict', async () => {
  const { clock, d, fired } = detector();
  // The process was frozen: time jumps past the deadline before the timer can run.
  clock.t += 10_000;
  await clock.tick(0);
  assert.deepEqual(fired, []);
  await clock.tick(2500);
  assert.deepEqual(fired, ['late'], 'and it keeps watching');
});

test('pings held by a sleep of this process arrive together: no clump, either way the wake-up is seen', async () => {
  for (const timerFirst of [false, true]) {
    const { clock, d, fired } = detector();
    const t0 = clock.now();
    d.ping(t0);
    // Frozen for 10 s while the server kept pinging every second.
    clock.t += 10_000;
    if (timerFirst) await clock.tick(0); // the overdue lateness timer runs before the data
    for (let i = 1; i <= 10; i++) d.ping(t0 + i * 1000);
    assert.deepEqual(fired, [], `timer first: ${timerFirst}`);
    // Afterwards the rule works again.
    await clock.tick(1000);
    const t1 = clock.now();
    for (let i = 0; i < 3; i++) d.ping(t1 + i * 1000);
    assert.deepEqual(fired, ['clumped'], `timer first: ${timerFirst}`);
  }
});

// ---- in the client ----------------------------------------------------------------------

async function connected(mode, opts) {
  const clock = new Clock();
  const server = new FakeServer(clock);
  server.hb = 1000;
  Object.assign(server.mode, mode);
  const ferry = server.client({ buffering: { slack: 500 }, ...opts });
  const got = [];
  const transports = [];
  ferry.on('transport', (e) => transports.push(e));
  ferry.subscribe('room:a', (d) => got.push(d));
  await until(() => ferry.state === 'connected' && server.att?.subs.has('room:a'));
  return { clock, server, ferry, got, transports };
}

test('late heartbeats move the session down one transport, make-before-break, nothing lost', async () => {
  const { clock, server, ferry, got, transports } = await connected();
  server.publish('room:a', 1);
  const ws = server.att;
  // The proxy starts holding everything: the client hears nothing for 2.5 s.
  ws.deliver = () => {};
  server.publish('room:a', 2);
  await clock.tick(2500);
  await until(() => ferry.transport === 'sse');
  assert.deepEqual(transports.at(-1), { from: 'websocket', to: 'sse', reason: 'buffering' });
  assert.equal(ferry.state, 'connected');
  server.publish('room:a', 3);
  assert.deepEqual(got, [1, 2, 3]);
  assert.ok(ws.ended, 'the buffered attachment was superseded');
  ferry.close();
});

test('clumped heartbeats move the session down too', async () => {
  const { clock, server, ferry, transports } = await connected();
  const t0 = clock.now();
  await clock.tick(3000 - 1); // (pings held by the proxy)
  server.ping(t0 + 1000);
  server.ping(t0 + 2000);
  server.ping(t0 + 3000);
  await until(() => ferry.transport === 'sse');
  assert.deepEqual(transports.at(-1), { from: 'websocket', to: 'sse', reason: 'buffering' });
  ferry.close();
});

test('the state never leaves connected while moving down, and healthy heartbeats keep it put', async () => {
  const { clock, server, ferry } = await connected();
  const states = [];
  ferry.on('state', (e) => states.push(e.state));
  for (let i = 0; i < 10; i++) {
    await clock.tick(1000);
    server.ping();
  }
  assert.equal(ferry.transport, 'websocket');
  assert.deepEqual(states, []);
  ferry.close();
});

test('on long-polling pings that come together in one response are no clump', async () => {
  const { clock, server, ferry } = await connected({ websocket: 'fail' }, { transports: ['websocket', 'longpoll', 'sse'], upgradeProbe: { min: 1e9, max: 1e9 } });
  assert.equal(ferry.transport, 'longpoll');
  await until(() => server.att.holding, 'a poll is held');
  const held = server.att;
  const t0 = clock.now();
  server.ping(t0 - 50000); // a hold apart, as if queued between polls
  server.ping(t0 - 25000);
  server.ping(t0);
  await until(() => server.att !== held && server.att.holding, 'the next poll is held');
  assert.equal(ferry.transport, 'longpoll');
  ferry.close();
});

test('on long-polling a poll unanswered for two holds plus slack is buffering', async () => {
  const { clock, server, ferry, transports } = await connected({ websocket: 'fail' }, { transports: ['websocket', 'longpoll', 'sse'], upgradeProbe: { min: 1e9, max: 1e9 } });
  await until(() => server.att.holding);
  // Responses sit in a proxy: polls neither return nor ping.
  server.mode.longpoll = 'never';
  server.att.deliver = () => {};
  server.att.hold = () => {};
  server.clock.clearTimeout(server.att.timer);
  await clock.tick(25000 * 2 + 500);
  await until(() => ferry.transport === 'sse');
  assert.deepEqual(transports.at(-1), { from: 'longpoll', to: 'sse', reason: 'buffering' });
  ferry.close();
});

test('late heartbeats with no transport below mean a dead stream: the client resumes anew', async () => {
  const { clock, server, ferry, got } = await connected({}, { transports: ['websocket'] });
  const states = [];
  ferry.on('state', (e) => states.push([e.state, e.code]));
  server.publish('room:a', 1);
  server.att.deliver = () => {}; // half-open: no close event ever comes
  server.publish('room:a', 2);
  await clock.tick(2500);
  assert.deepEqual(states, [['reconnecting', 4004]]);
  await clock.tick(250);
  await until(() => ferry.state === 'connected');
  assert.deepEqual(got, [1, 2]);
  ferry.close();
});

test('clumped heartbeats with no transport below change nothing', async () => {
  const { clock, server, ferry } = await connected({}, { transports: ['websocket'] });
  const t0 = clock.now();
  await clock.tick(2000);
  server.ping(t0);
  server.ping(t0 + 1000);
  server.ping(t0 + 2000);
  await until(() => true);
  assert.equal(ferry.state, 'connected');
  assert.equal(server.conns.length, 1);
  ferry.close();
});
