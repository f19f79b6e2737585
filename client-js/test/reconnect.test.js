import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Clock, FakeServer, until, retries } from './fakes.js';
import { fullJitter, equalJitter } from '../src/backoff.js';
import { FerryError } from '../src/index.js';

function world(mode = {}, opts) {
  const clock = new Clock();
  const server = new FakeServer(clock);
  Object.assign(server.mode, mode);
  const ferry = server.client({ buffering: false, upgradeProbe: { min: 1e9, max: 1e9 }, ...opts });
  const states = [];
  ferry.on('state', (e) => states.push(e));
  return { clock, server, ferry, states };
}


test('full jitter stays within [0, min(max, min·2^n)]', () => {
  for (let n = 0; n < 12; n++) {
    const cap = Math.min(15000, 250 * 2 ** n);
    assert.equal(fullJitter(n, 250, 15000, () => 0), 0);
    assert.equal(fullJitter(n, 250, 15000, () => 0.999999), cap * 0.999999);
    for (let i = 0; i < 200; i++) {
      const d = fullJitter(n, 250, 15000, Math.random);
      assert.ok(d >= 0 && d <= cap, `attempt ${n}: ${d} outside [0, ${cap}]`);
    }
  }
});

test('probe jitter stays within [cap/2, cap]', () => {
  for (let n = 0; n < 10; n++) {
    const cap = Math.min(300000, 5000 * 2 ** n);
    for (const r of [0, 0.3, 0.999]) {
      const d = equalJitter(n, 5000, 300000, () => r);
      assert.ok(d >= cap / 2 && d <= cap, `attempt ${n}: ${d}`);
    }
  }
});

test('the client backs off between rounds within the configured bounds', async () => {
  const { clock, server, ferry } = world({ websocket: 'fail', sse: 'fail' }, { transports: ['websocket', 'sse'], backoff: { min: 100, max: 1000 }, random: () => 1 });
  const delays = [];
  for (let i = 0; i < 7; i++) {
    await until(() => retries(server).length > i);
    delays.push(retries(server)[i]);
    await clock.tick(delays.at(-1));
  }
  assert.deepEqual(delays, [100, 200, 400, 800, 1000, 1000, 1000]);
  assert.equal(server.negotiations.length, 8);
  ferry.close();
});

test('a lost connection reconnects and says so, with the code', async () => {
  const { clock, server, ferry, states } = world();
  await until(() => ferry.state === 'connected');
  server.att.end(4002, 'slow consumer');
  assert.equal(ferry.state, 'reconnecting');
  assert.deepEqual(states.at(-1), { state: 'reconnecting', transport: null, code: 4002, reason: 'slow consumer' });
  await clock.tick(250);
  await until(() => ferry.state === 'connected');
  assert.deepEqual(server.negotiations.at(-1).body, { session: 'cred1', cid: server.negotiations[0].body.cid }, 'resumes the session');
  ferry.close();
});

for (const code of [1008, 4100, 4101, 1009]) {
  test(`terminal close code ${code} stops reconnecting`, async () => {
    const { clock, server, ferry, states } = world();
    const errors = [];
    ferry.on('error', (e) => errors.push(e));
    await until(() => ferry.state === 'connected');
    server.ack = false;
    const pending = ferry.send(1).catch((e) => e);
    server.att.end(code, 'no');
    assert.deepEqual(states.at(-1), { state: 'disconnected', transport: null, code, reason: 'no' });
    assert.equal(errors.length, 1);
    assert.equal(errors[0].code, code);
    assert.equal((await pending).code, code);
    const n = server.negotiations.length;
    await clock.tick(600000);
    assert.equal(server.negotiations.length, n, 'never again');
    assert.equal(server.sockets.length, 1);
  });
}

test('a terminal code while proving a transport stops too', async () => {
  const { server, ferry } = world();
  server._attach = (conn) => conn.end(4101, 'token expired'); // every attachment
  await until(() => ferry.state === 'disconnected');
  assert.equal(server.sockets.length, 1);
  assert.equal(server.streams.length, 0, 'no fallback after a terminal code');
});

test('4001 on the current attachment, with no move of ours pending, is terminal: superseded', async () => {
  const { server, ferry, states } = world();
  await until(() => ferry.state === 'connected');
  server.att.end(4001, 'superseded');
  assert.equal(ferry.state, 'disconnected');
  assert.equal(states.at(-1).code, 4001);
});

test('4003 (server shutting down) reconnects promptly, with small jitter even while the server is away', async () => {
  const { clock, server, ferry } = world({}, { random: () => 1 });
  await until(() => ferry.state === 'connected');
  server.mode.websocket = server.mode.sse = server.mode.longpoll = 'fail';
  server.transports = ['websocket', 'sse'];
  server.att.end(4003, 'shutting down');
  const delays = [];
  for (let i = 0; i < 6; i++) {
    await until(() => retries(server).length > i);
    delays.push(retries(server)[i]);
    await clock.tick(delays.at(-1));
  }
  assert.deepEqual(delays, [250, 500, 1000, 2000, 2000, 2000]);
  ferry.close();
});

test('4029 (rate limited) waits a longer backoff', async () => {
  const { clock, server, ferry } = world({}, { random: () => 1 });
  await until(() => ferry.state === 'connected');
  server.att.end(4029, 'rate limited');
  assert.deepEqual(retries(server), [4000]);
  ferry.close();
});

test('the online event retries at once', async () => {
  const online = new EventTarget();
  const { server, ferry } = world({ websocket: 'fail', sse: 'fail' }, { transports: ['websocket', 'sse'], online });
  await until(() => retries(server).length > 0);
  const n = server.negotiations.length;
  server.mode.websocket = 'ok';
  online.dispatchEvent(new Event('online'));
  await until(() => ferry.state === 'connected');
  assert.equal(server.negotiations.length, n + 1);
  ferry.close();
  online.dispatchEvent(new Event('online'));
  await until(() => true);
  assert.equal(server.negotiations.length, n + 1, 'no listener after close');
});

test('an expired credential at negotiate gets a fresh session at once', async () => {
  const { clock, server, ferry } = world();
  await until(() => ferry.state === 'connected');
  server.att.cut();
  server.expireAll();
  const real = server._negotiate.bind(server);
  server.negotiateReply = (body) => body.session
    ? new Response(JSON.stringify({ code: 4005, reason: 'expired' }), { status: 401 })
    : (server.negotiateReply = null, real({ body: JSON.stringify(body) }));
  await clock.tick(250);
  await until(() => ferry.state === 'connected');
  assert.equal(ferry.sid, 'sid2');
});

test('a session that expires again before anything proved itself backs off', async () => {
  const { clock, server, ferry } = world({}, { random: () => 1 });
  await until(() => ferry.state === 'connected');
  server._attach = (conn) => conn.end(4005, 'gone'); // every attachment
  server.att.end(4005, 'gone');
  await until(() => server.negotiations.length === 2);
  await until(() => retries(server).length > 0, 'backing off');
  assert.deepEqual(retries(server), [250]);
  ferry.close();
});

test('negotiate refused as unauthorized is terminal; a failing negotiate is retried', async () => {
  const a = world();
  a.server.negotiateReply = () => new Response(JSON.stringify({ code: 4101, reason: 'bad token' }), { status: 401 });
  const errors = [];
  a.ferry.on('error', (e) => errors.push(e));
  await until(() => a.ferry.state === 'disconnected');
  assert.equal(a.states.at(-1).code, 4101);
  assert.ok(errors[0] instanceof FerryError);

  const b = world();
  b.server.negotiateReply = () => new Response('<html>bad gateway</html>', { status: 502 });
  await until(() => retries(b.server).length > 0);
  b.server.negotiateReply = null;
  await b.clock.tick(250);
  await until(() => b.ferry.state === 'connected');
  b.ferry.close();
});

test('close() stops everything; connect() resumes with the same positions', async () => {
  const { clock, server, ferry, states } = world();
  const got = [];
  ferry.subscribe('room:a', (d) => got.push(d));
  await until(() => ferry.state === 'connected' && server.att.subs.has('room:a'));
  server.publish('room:a', 1);
  ferry.close();
  assert.deepEqual(states.at(-1), { state: 'disconnected', transport: null, code: 1000, reason: 'client closed' });
  assert.equal(ferry.transport, null);
  server.publish('room:a', 2);
  await clock.tick(60000);
  assert.equal(server.negotiations.length, 1);
  ferry.connect();
  await until(() => ferry.state === 'connected');
  assert.deepEqual(got, [1, 2]);
  ferry.close();
});

test('close() right after construction never connects', async () => {
  const { server, ferry } = world();
  ferry.close();
  await until(() => true);
  assert.equal(server.requests.length, 0);
});
