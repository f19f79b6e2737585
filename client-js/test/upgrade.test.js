import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Clock, FakeServer, MemStorage, until } from './fakes.js';
import { rememberTransport } from '../src/memory.js';

const TEN_MIN = 10 * 60 * 1000;

function world(mode = {}) {
  const clock = new Clock();
  const server = new FakeServer(clock);
  Object.assign(server.mode, mode);
  const storage = new MemStorage();
  /** A client with a transport memory (the memory entry) in storage, on the test's clock. */
  const remembering = (options = {}, extra = {}) => server.client({ transportMemory: rememberTransport({ storage, now: clock.now, ...options }), ...extra });
  return { clock, server, storage, remembering };
}

function watch(ferry) {
  const log = { transport: [], state: [], got: [] };
  ferry.on('transport', (e) => log.transport.push(e));
  ferry.on('state', (e) => log.state.push(e.state));
  return log;
}

test('the transport that worked is remembered per origin and the next client starts there', async () => {
  const { clock, server, storage, remembering } = world({ websocket: 'silent' });
  const first = remembering();
  await clock.tick(3000);
  await until(() => first.transport === 'sse');
  first.close();
  assert.deepEqual(JSON.parse(storage.getItem('ferry:transport:https://example.test')), { t: 'sse', at: clock.now() });

  const sockets = server.sockets.length;
  const second = remembering();
  const log = watch(second);
  await until(() => second.state === 'connected');
  assert.equal(second.transport, 'sse');
  assert.equal(server.sockets.length, sockets, 'no WebSocket proof timeout to sit through again');
  assert.deepEqual(log.transport, [{ from: null, to: 'sse', reason: 'remembered' }]);
  second.close();
});

test('a remembered transport older than the TTL is ignored', async () => {
  const { clock, server, storage, remembering } = world();
  storage.setItem('ferry:transport:https://example.test', JSON.stringify({ t: 'longpoll', at: clock.now() }));
  await clock.tick(TEN_MIN);
  const ferry = remembering();
  await until(() => ferry.state === 'connected');
  assert.equal(ferry.transport, 'websocket');
  ferry.close();

  storage.setItem('ferry:transport:https://example.test', JSON.stringify({ t: 'longpoll', at: clock.now() }));
  await clock.tick(TEN_MIN - 1);
  const young = remembering();
  await until(() => young.state === 'connected');
  assert.equal(young.transport, 'longpoll');
  young.close();
});

test('the TTL is an option, and 0 turns the memory off', async () => {
  const { clock, server, storage, remembering } = world();
  storage.setItem('ferry:transport:https://example.test', JSON.stringify({ t: 'sse', at: clock.now() - 1000 }));
  const off = remembering({ ttl: 0 });
  await until(() => off.state === 'connected');
  assert.equal(off.transport, 'websocket');
  off.close();
  const short = remembering({ ttl: 999 });
  await until(() => short.state === 'connected');
  assert.equal(short.transport, 'websocket');
  short.close();
});

test('a storage that throws only disables the memory', async () => {
  const { clock, server } = world({ websocket: 'silent' });
  const storage = { getItem() { throw new Error('denied'); }, setItem() { throw new Error('quota'); } };
  const memory = rememberTransport({ storage, now: clock.now });
  const ferry = server.client({ transportMemory: memory });
  await clock.tick(3000);
  await until(() => ferry.state === 'connected');
  assert.equal(ferry.transport, 'sse');
  ferry.close();
  // The in-process copy still serves the clients that share the memory.
  assert.equal(memory.get('https://example.test/ferry'), 'sse');
});

test('without a transport memory (the default) nothing is remembered', async () => {
  const { clock, server, storage } = world({ websocket: 'silent' });
  storage.setItem('ferry:transport:https://example.test', JSON.stringify({ t: 'longpoll', at: clock.now() }));
  const ferry = server.client();
  const log = watch(ferry);
  await clock.tick(3000);
  await until(() => ferry.transport === 'sse');
  assert.equal(log.transport[0].reason, 'connect');
  assert.deepEqual(JSON.parse(storage.getItem('ferry:transport:https://example.test')), { t: 'longpoll', at: clock.now() - 3000 });
  ferry.close();
});

test('on SSE the client probes WebSocket in the background and moves up once it proves', async () => {
  const { clock, server } = world({ websocket: 'fail' });
  const ferry = server.client({ upgradeProbe: { min: 4000, max: 60000 } });
  const log = watch(ferry);
  ferry.subscribe('room:a', (d) => log.got.push(d));
  await until(() => ferry.transport === 'sse');
  const sse = server.att;
  server.mode.websocket = 'ok';
  server.publish('room:a', 1);
  // equal jitter with random() = 0.5: 3/4 of the 4 s window
  await clock.tick(2999);
  assert.equal(server.sockets.length, 1, 'no probe yet');
  await clock.tick(1);
  await until(() => ferry.transport === 'websocket');
  server.publish('room:a', 2);
  assert.deepEqual(log.transport.at(-1), { from: 'sse', to: 'websocket', reason: 'upgrade' });
  assert.ok(sse.ended, 'the server superseded the SSE attachment');
  assert.deepEqual(log.state, ['connected'], 'connected all along');
  assert.deepEqual(log.got, [1, 2]);
  ferry.close();
});

test('callbacks of a replaced transport are ignored', async () => {
  const { clock, server } = world({ websocket: 'fail' });
  const ferry = server.client({ upgradeProbe: { min: 1000, max: 1000 } });
  const log = watch(ferry);
  ferry.subscribe('room:a', (d) => log.got.push(d));
  await until(() => ferry.transport === 'sse');
  const es = server.streams[0];
  server.mode.websocket = 'ok';
  await clock.tick(1000);
  await until(() => ferry.transport === 'websocket');
  // The old stream still delivers something, then fails: neither may count.
  es.onmessage({ data: JSON.stringify({ t: 'hello', sid: 'sid1', v: 1, tr: 'sse', ts: 0, hb: 15000 }) });
  es.onmessage({ data: JSON.stringify({ t: 'msg', ch: 'room:a', ep: 'e1', off: 7, d: 'stale' }) });
  es.onmessage({ data: JSON.stringify({ t: 'close', code: 4101, reason: 'stale' }) });
  es.onerror({});
  await until(() => true);
  assert.equal(ferry.state, 'connected');
  assert.equal(ferry.transport, 'websocket');
  assert.deepEqual(log.got, []);
  server.publish('room:a', 'fresh');
  assert.deepEqual(log.got, ['fresh']);
  ferry.close();
});

test('a probe that fails leaves the session where it was, and the next probe waits longer', async () => {
  const { clock, server } = world({ websocket: 'fail' });
  const ferry = server.client({ upgradeProbe: { min: 1000, max: 8000 }, random: () => 1, buffering: false });
  const log = watch(ferry);
  await until(() => ferry.transport === 'sse');
  server.mode.websocket = 'silent';
  const probes = [];
  for (let i = 0; i < 4; i++) {
    const n = server.sockets.length;
    await clock.tick(20000);
    probes.push(server.sockets.length - n);
    assert.ok(server.sockets.length > n);
  }
  assert.equal(ferry.transport, 'sse');
  assert.deepEqual(log.state, ['connected']);
  // windows 1, 2, 4, 8 s plus a 3 s proof each: more probes early, fewer later
  assert.ok(probes[0] > probes[3], `probes per 20 s: ${probes}`);
  ferry.close();
});

test('a probe that superseded the current attachment and then failed is followed by a fresh one, nothing lost', async () => {
  const { clock, server } = world({ websocket: 'fail' });
  const ferry = server.client({ upgradeProbe: { min: 1000, max: 1000 } });
  const log = watch(ferry);
  ferry.subscribe('room:a', (d) => log.got.push(d));
  await until(() => ferry.transport === 'sse');
  server.mode.websocket = 'mute';
  server.publish('room:a', 1);
  await clock.tick(750);
  await until(() => server.att.tr === 'websocket');
  server.publish('room:a', 2); // only the mute socket has it
  await clock.tick(3000);
  await until(() => server.att.tr === 'sse');
  server.publish('room:a', 3);
  assert.equal(ferry.transport, 'sse');
  assert.deepEqual(log.state, ['connected']);
  assert.deepEqual(log.got, [1, 2, 3]);
  ferry.close();
});

test('from long-polling the probe moves up as well; the superseded poll stops', async () => {
  const { clock, server } = world({ websocket: 'fail', sse: 'fail' });
  const ferry = server.client({ upgradeProbe: { min: 1000, max: 1000 }, buffering: false });
  const log = watch(ferry);
  ferry.subscribe('room:a', (d) => log.got.push(d));
  await until(() => ferry.transport === 'longpoll' && server.att.holding);
  server.publish('room:a', 1);
  server.mode.websocket = 'ok';
  await clock.tick(750);
  await until(() => ferry.transport === 'websocket');
  const polls = server.requests.filter((r) => r.path === '/poll').length;
  server.publish('room:a', 2);
  await clock.tick(60000);
  assert.equal(server.requests.filter((r) => r.path === '/poll').length, polls, 'no poll after the move');
  assert.deepEqual(log.got, [1, 2]);
  assert.deepEqual(log.transport.at(-1), { from: 'longpoll', to: 'websocket', reason: 'upgrade' });
  ferry.close();
});

test('while a probe is being proved the long-poll does not poll again (that would supersede the probe)', async () => {
  const { clock, server } = world({ websocket: 'fail', sse: 'fail' });
  const ferry = server.client({ upgradeProbe: { min: 1000, max: 1000 }, buffering: false });
  const got = [];
  ferry.subscribe('room:a', (d) => got.push(d));
  await until(() => ferry.transport === 'longpoll' && server.att.holding);
  server.mode.websocket = 'mute'; // attaches (the held poll gets 204) but proves nothing yet
  await clock.tick(750);
  await until(() => server.att.tr === 'websocket');
  const n = polls(server).length;
  server.publish('room:a', 1);
  await clock.tick(2999);
  assert.equal(polls(server).length, n, 'no poll while the probe is pending');
  assert.equal(server.att.tr, 'websocket');
  await clock.tick(1); // the probe fails its proof: a fresh long-poll attachment
  await until(() => server.att.tr === 'longpoll' && server.att.holding);
  assert.equal(polls(server)[n].url.searchParams.get('hello'), '1', 'a new attachment proves itself again');
  assert.deepEqual(got, [1]);
  assert.equal(ferry.transport, 'longpoll');
  ferry.close();
});

const polls = (server) => server.requests.filter((r) => r.path === '/poll');
