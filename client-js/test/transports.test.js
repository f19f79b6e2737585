import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Clock, FakeServer, until } from './fakes.js';

function world(mode = {}, opts) {
  const clock = new Clock();
  const server = new FakeServer(clock);
  Object.assign(server.mode, mode);
  const ferry = server.client({ buffering: false, upgradeProbe: { min: 1e9, max: 1e9 }, ...opts });
  return { clock, server, ferry };
}
const polls = (server) => server.requests.filter((r) => r.path === '/poll');

test('long-polling: hello=1 on the first poll only, the cursor follows the frames, hold and token go along', async () => {
  const { server, ferry } = world({ websocket: 'fail', sse: 'fail' }, { pollHold: 5000, token: 'tk' });
  ferry.subscribe('room:a');
  await until(() => ferry.transport === 'longpoll' && server.att.holding);
  server.publish('room:a', 1);
  server.publish('room:a', 2);
  await until(() => polls(server).length === 3 && server.att.holding);
  const [first, second, third] = polls(server).map((r) => r.url.searchParams);
  assert.equal(first.get('hello'), '1');
  assert.equal(second.get('hello'), null);
  assert.equal(third.get('hello'), null);
  assert.equal(first.get('hold'), '5000');
  assert.equal(second.get('cursor'), 'room:a=e1.0');
  assert.equal(third.get('cursor'), 'room:a=e1.2');
  for (const r of polls(server)) {
    assert.equal(r.init.headers.Authorization, 'Bearer tk');
    assert.equal(r.url.searchParams.get('token'), null, 'a header where headers are possible');
  }
  ferry.close();
});

test('long-polling: a failed poll (502) is an ordinary retry from the same cursor', async () => {
  const { clock, server, ferry } = world({ websocket: 'fail', sse: 'fail' });
  const got = [];
  const states = [];
  ferry.subscribe('room:a', (d) => got.push(d));
  await until(() => ferry.transport === 'longpoll' && server.att.holding);
  ferry.on('state', (e) => states.push(e.state));
  ferry.on('transport', (e) => states.push(e));
  server.failPolls = 2;
  server.publish('room:a', 1);
  server.publish('room:a', 2);
  await until(() => got.length === 2);
  await clock.tick(1000);
  assert.equal(server.failPolls, 0);
  server.publish('room:a', 3);
  await until(() => got.length === 3);
  assert.deepEqual(got, [1, 2, 3]);
  assert.deepEqual(states, [], 'neither a state change nor a move');
  const retried = polls(server).slice(-4, -1).map((r) => r.url.searchParams.get('cursor'));
  assert.deepEqual(retried, ['room:a=e1.2', 'room:a=e1.2', 'room:a=e1.2']);
  ferry.close();
});

test('long-polling: polls that keep failing end the attachment and the client reconnects', async () => {
  const { clock, server, ferry } = world({ websocket: 'fail', sse: 'fail' });
  await until(() => ferry.transport === 'longpoll' && server.att.holding);
  server.failPolls = 3;
  server.att.cut();
  await clock.tick(1000);
  await until(() => ferry.state === 'reconnecting' || server.negotiations.length === 2);
  await clock.tick(1000);
  await until(() => ferry.state === 'connected');
  assert.equal(server.negotiations.length, 2);
  ferry.close();
});

test('long-polling: a 204 with no move of ours pending means poll again', async () => {
  const { server, ferry } = world({ websocket: 'fail', sse: 'fail' });
  await until(() => ferry.transport === 'longpoll' && server.att.holding);
  const n = polls(server).length;
  server.att.end(4001); // 204 from the fake
  await until(() => polls(server).length === n + 1 && server.att.holding);
  assert.equal(ferry.state, 'connected');
  assert.equal(polls(server).at(-1).url.searchParams.get('hello'), null);
  ferry.close();
});

test('long-polling: an error body with 4005 renegotiates', async () => {
  const { server, ferry } = world({ websocket: 'fail', sse: 'fail' });
  await until(() => ferry.transport === 'longpoll' && server.att.holding);
  server.expireAll();
  server.att.end(4005, 'expired'); // 401 {code: 4005}
  await until(() => ferry.sid === 'sid2' && ferry.state === 'connected');
  assert.deepEqual(server.negotiations.at(-1).body, { cid: server.negotiations[0].body.cid }, 'a new session, the same cid');
  ferry.close();
});

test('WebSocket URLs follow the scheme of the base: http→ws, https→wss', async () => {
  const clock = new Clock();
  const server = new FakeServer(clock);
  const { Ferry } = await import('../src/index.js');
  const ferry = new Ferry('http://example.test/ferry/', server.options());
  await until(() => ferry.state === 'connected');
  assert.match(server.sockets[0].url, /^ws:\/\/example\.test\/ferry\/ws\?session=cred1&cursor=&att=1$/);
  ferry.close();
});

test('SSE: a frame that is not JSON fails the transport; the stream URL carries session, cursor, token', async () => {
  const { server, ferry } = world({ websocket: 'fail', sse: 'silent' }, { token: 'tk' });
  await until(() => server.streams[0]?.readyState === 1);
  const url = new URL(server.streams[0].url);
  assert.equal(url.pathname, '/ferry/sse');
  assert.equal(url.searchParams.get('session'), 'cred1');
  assert.equal(url.searchParams.get('token'), 'tk');
  server.streams[0].onmessage({ data: '<html>' });
  await until(() => ferry.transport === 'longpoll');
  assert.equal(server.streams[0].readyState, 2);
  ferry.close();
});

test('long-polling: once a newer attachment is on its way, the loop stops instead of polling again', async () => {
  const { longpoll } = await import('../src/transports/longpoll.js');
  const clock = new Clock();
  let polls = 0;
  let replaced = false;
  const closed = [];
  // The transport options and methods are internal: their names end in _ (build.mjs shortens them).
  const t = longpoll({
    base_: 'https://example.test/ferry', session_: 's', token_: null, hold_: undefined, holdMs_: 1000, timeout_: 1000,
    fetch: async () => {
      polls++;
      await new Promise((r) => setImmediate(r)); // a network round trip: let the test look
      return new Response(JSON.stringify({ frames: [{ t: 'hello' }] }), { status: 200 });
    },
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    cursor_: () => '',
    retry_: () => 0,
    replaced_: () => replaced,
    onFrame_: () => { replaced = true; }, // a probe started while the response was being read
    onClose_: (code, reason) => closed.push([code, reason]),
  });
  t.open_();
  await until(() => closed.length === 1);
  assert.equal(polls, 1);
  assert.deepEqual(closed, [[4001, 'superseded']]);
});
