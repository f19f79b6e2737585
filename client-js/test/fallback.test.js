import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Clock, FakeServer, until, retries } from './fakes.js';

function setup(mode = {}, opts) {
  const clock = new Clock();
  const server = new FakeServer(clock);
  Object.assign(server.mode, mode);
  const ferry = server.client(opts);
  const log = { state: [], transport: [] };
  ferry.on('state', (e) => log.state.push(e));
  ferry.on('transport', (e) => log.transport.push(e));
  return { clock, server, ferry, log };
}

test('connects on the first transport and says why', async () => {
  const { ferry, log } = setup();
  await until(() => ferry.state === 'connected');
  assert.equal(ferry.transport, 'websocket');
  assert.deepEqual(log.transport, [{ from: null, to: 'websocket', reason: 'connect' }]);
  assert.deepEqual(log.state.map((e) => [e.state, e.transport]), [['connected', 'websocket']]);
  ferry.close();
});

test('negotiates before attaching, with the token as a bearer header and in the WebSocket query', async () => {
  const { ferry, server } = setup({}, { token: async () => 'tok1' });
  await until(() => ferry.state === 'connected');
  assert.equal(server.requests[0].path, '/negotiate');
  assert.equal(server.requests[0].init.method, 'POST');
  assert.equal(server.negotiations[0].headers.Authorization, 'Bearer tok1');
  const url = new URL(server.sockets[0].url);
  assert.equal(url.protocol, 'wss:');
  assert.equal(url.pathname, '/ferry/ws');
  assert.equal(url.searchParams.get('session'), 'cred1');
  assert.equal(url.searchParams.get('token'), 'tok1');
  assert.equal(ferry.sid, 'sid1');
  ferry.close();
});

test('a WebSocket that opens but carries nothing fails its proof; SSE is tried at once', async () => {
  const { ferry, clock, server, log } = setup({ websocket: 'silent' });
  await until(() => server.sockets.length === 1);
  await clock.tick(2999);
  assert.equal(server.streams.length, 0, 'no move before the proof timeout');
  await clock.tick(1);
  await until(() => ferry.state === 'connected');
  assert.equal(ferry.transport, 'sse');
  assert.equal(server.sockets[0].readyState, 3, 'the silent socket is closed');
  assert.deepEqual(log.transport.at(-1), { from: 'websocket', to: 'sse', reason: 'proof-timeout' });
  ferry.close();
});

test('a WebSocket that fails with 1006 moves on immediately, without waiting for the proof timeout', async () => {
  const { ferry, clock, log } = setup({ websocket: 'fail' });
  await until(() => ferry.state === 'connected');
  assert.equal(clock.t, 1_700_000_000_000, 'no time passed');
  assert.equal(ferry.transport, 'sse');
  assert.deepEqual(log.transport.at(-1), { from: 'websocket', to: 'sse', reason: 'ws-closed-1006' });
  ferry.close();
});

test('an SSE stream whose onopen fires but no event arrives fails; long-polling carries the session', async () => {
  const { ferry, clock, server, log } = setup({ websocket: 'fail', sse: 'silent' });
  await until(() => server.streams.length === 1 && server.streams[0].readyState === 1);
  assert.equal(ferry.state, 'connecting', 'onopen proves nothing');
  await clock.tick(3000);
  await until(() => ferry.state === 'connected');
  assert.equal(ferry.transport, 'longpoll');
  assert.equal(server.streams[0].readyState, 2, 'the stream is closed');
  assert.deepEqual(log.transport.map((e) => e.to), ['websocket', 'sse', 'longpoll']);
  assert.deepEqual(log.transport.at(-1), { from: 'sse', to: 'longpoll', reason: 'proof-timeout' });
  const poll = server.requests.find((r) => r.path === '/poll');
  assert.equal(poll.url.searchParams.get('hello'), '1');
  ferry.close();
});

test('transports that never open fail by the proof timeout, one after the other', async () => {
  const { ferry, clock, server } = setup({ websocket: 'never', sse: 'never' });
  await until(() => server.sockets.length === 1);
  await clock.tick(3000);
  await until(() => server.streams.length === 1);
  await clock.tick(3000);
  await until(() => ferry.state === 'connected');
  assert.equal(ferry.transport, 'longpoll');
  ferry.close();
});

test('the walk follows the app order, intersected with what the server and the platform allow', async () => {
  const { ferry, server } = setup({}, { transports: ['longpoll', 'sse', 'websocket'], EventSource: undefined });
  server.transports = ['websocket', 'sse'];
  await until(() => ferry.state === 'connected');
  assert.equal(ferry.transport, 'websocket');
  assert.equal(server.streams.length, 0);
  assert.equal(server.requests.filter((r) => r.path === '/poll').length, 0);
  ferry.close();
});

test('when every transport fails, rounds repeat with full-jitter backoff', async () => {
  const { ferry, clock, server } = setup({ websocket: 'fail', sse: 'fail' }, { random: () => 1, transports: ['websocket', 'sse'] });
  await until(() => server.negotiations.length === 1 && retries(server).length === 1);
  // random() = 1 takes the top of each window: 250, 500, 1000 ms
  for (const ms of [250, 500, 1000]) {
    const n = server.negotiations.length;
    await clock.tick(ms - 1);
    assert.equal(server.negotiations.length, n, `not before ${ms} ms`);
    await clock.tick(1);
    await until(() => server.negotiations.length === n + 1);
    await until(() => retries(server).length === server.negotiations.length, 'round failed');
  }
  assert.equal(ferry.state, 'connecting');
  server.mode.sse = 'ok';
  await clock.tick(2000);
  await until(() => ferry.state === 'connected');
  assert.equal(ferry.transport, 'sse');
  ferry.close();
});
