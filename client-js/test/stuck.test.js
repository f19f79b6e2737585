// Issue 20: a message that the platform refuses on one transport (a WebSocket text frame
// that isn't UTF-8) must not keep the client from every message after it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Clock, FakeServer, until } from './fakes.js';

/** A server whose WebSockets break (as a browser fails them) on any msg with d.poison. */
function poisoned(breakWith = 'cut') {
  const clock = new Clock();
  const server = new FakeServer(clock);
  const attach = server._attach.bind(server);
  server._attach = (conn, params, hello) => {
    if (conn.tr === 'websocket') {
      const deliver = conn.deliver.bind(conn);
      conn.deliver = (f) => {
        if (!f.d?.poison) return deliver(f);
        if (breakWith === 'cut') return conn.cut();
        conn.ended = true;
        conn.ws._closed(breakWith);
      };
    }
    return attach(conn, params, hello);
  };
  const ferry = server.client({ upgradeProbe: { min: 5000, max: 5000 } });
  const log = { transport: [], errors: [], got: [] };
  ferry.on('transport', (e) => log.transport.push(e));
  ferry.on('error', (e) => log.errors.push(e));
  ferry.subscribe('c', (d) => log.got.push(d));
  return { clock, server, ferry, log };
}

test('a message that breaks the WebSocket at every replay benches it: SSE carries on at once', async () => {
  const { clock, server, ferry, log } = poisoned();
  await until(() => ferry.state === 'connected' && ferry.subscription('c').state === 'subscribed');
  server.publish('c', { n: 1 });
  server.publish('c', { n: 2, poison: true });
  server.publish('c', { n: 3 });
  // First loss: an ordinary reconnect, after one backoff (125 ms: full jitter with random 0.5).
  await until(() => ferry.state === 'reconnecting');
  await clock.tick(125);
  // The replay breaks it again at the same position: benched, SSE after one more backoff.
  await until(() => server.sockets.length === 2 && ferry.state === 'reconnecting', 'the second loss');
  assert.equal(log.errors.length, 1);
  await clock.tick(125);
  await until(() => ferry.state === 'connected' && ferry.transport === 'sse', 'connected on SSE');
  assert.equal(server.sockets.length, 2, 'WebSocket tried twice, not more');
  assert.deepEqual(log.got.map((d) => d.n), [1, 2, 3], 'every message, the poisoned one through SSE');
  assert.equal(log.errors.length, 1);
  assert.equal(log.errors[0].code, 1006);
  assert.match(log.errors[0].reason, /websocket failed twice at the same position/);
  assert.equal(log.transport.at(-1).reason, 'benched');
  server.publish('c', { n: 4 });
  assert.deepEqual(log.got.map((d) => d.n), [1, 2, 3, 4]);
  ferry.close();
});

test('the upgrade probe tries the benched WebSocket again later, past the message, and lifts the bench', async () => {
  const { clock, server, ferry, log } = poisoned();
  await until(() => ferry.state === 'connected' && ferry.subscription('c').state === 'subscribed');
  server.publish('c', { n: 1, poison: true });
  await clock.tick(250);
  await until(() => ferry.transport === 'sse');
  await clock.tick(5000);
  await until(() => ferry.transport === 'websocket', 'back on WebSocket');
  assert.equal(log.transport.at(-1).reason, 'upgrade');
  server.publish('c', { n: 2 });
  assert.deepEqual(log.got.map((d) => d.n), [1, 2]);
  // Lifted: a later ordinary loss reconnects on WebSocket again.
  server.att.cut();
  await clock.tick(250);
  await until(() => ferry.state === 'connected');
  assert.equal(ferry.transport, 'websocket');
  ferry.close();
});

test('a WebSocket closed with 1007 is benched at once instead of ending the client', async () => {
  const { clock, server, ferry, log } = poisoned(1007);
  await until(() => ferry.state === 'connected' && ferry.subscription('c').state === 'subscribed');
  server.publish('c', { n: 1, poison: true });
  await clock.tick(250);
  await until(() => ferry.transport === 'sse', 'connected on SSE');
  assert.equal(server.sockets.length, 1, 'no second try on WebSocket');
  assert.equal(log.errors.length, 1);
  assert.equal(log.errors[0].code, 1007);
  assert.deepEqual(log.got.map((d) => d.n), [1]);
  ferry.close();
});

test('two ordinary losses at the same position with heartbeats in between bench nothing', async () => {
  const { clock, server, ferry, log } = poisoned();
  await until(() => ferry.state === 'connected');
  for (let i = 0; i < 3; i++) {
    server.ping();
    server.att.cut();
    await clock.tick(250);
    await until(() => ferry.state === 'connected');
    assert.equal(ferry.transport, 'websocket');
  }
  assert.equal(log.errors.length, 0);
  ferry.close();
});
