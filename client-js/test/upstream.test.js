import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Clock, FakeServer, until } from './fakes.js';
import { FerryError } from '../src/index.js';

function world(mode = {}, opts) {
  const clock = new Clock();
  const server = new FakeServer(clock);
  Object.assign(server.mode, mode);
  const ferry = server.client({ buffering: false, upgradeProbe: { min: 1e9, max: 1e9 }, ...opts });
  return { clock, server, ferry };
}

test('send and publish carry one increasing sequence and resolve on their acks', async () => {
  const { server, ferry } = world();
  const a = ferry.send({ type: 'move' });
  const b = ferry.publish('room:a', { text: 'hi' });
  assert.equal(await a, undefined);
  assert.deepEqual(await b, { epoch: 'e1', offset: 1 });
  assert.deepEqual(server.received.map(({ t, seq, ch, d }) => ({ t, seq, ch, d })), [
    { t: 'send', seq: 1, ch: undefined, d: { type: 'move' } },
    { t: 'pub', seq: 2, ch: 'room:a', d: { text: 'hi' } },
  ]);
  ferry.close();
});

test('frames made while connecting wait and go once a transport proves itself', async () => {
  const { clock, server, ferry } = world({ websocket: 'silent' });
  const p = ferry.send(1);
  await until(() => server.sockets.length === 1);
  assert.deepEqual(server.received, []);
  await clock.tick(3000);
  await p;
  assert.equal(ferry.transport, 'sse');
  assert.deepEqual(server.requests.filter((r) => r.path === '/send').length, 1);
  ferry.close();
});

test('an ack with err rejects with a FerryError carrying code and reason', async () => {
  const { server, ferry } = world();
  server.refuse = (f) => f.ch === 'admin' && { code: 4103, reason: 'not allowed to publish on admin' };
  const err = await ferry.publish('admin', 1).catch((e) => e);
  assert.ok(err instanceof FerryError);
  assert.equal(err.code, 4103);
  assert.equal(err.reason, 'not allowed to publish on admin');
  assert.equal(ferry.state, 'connected', 'a refused frame is not a broken connection');
  ferry.close();
});

test('unacked frames are resent on the next attachment until acked; duplicates resolve too', async () => {
  const { clock, server, ferry } = world();
  await until(() => ferry.state === 'connected');
  server.ack = false; // the acks get lost with the connection
  const a = ferry.send('a');
  const b = ferry.publish('room:a', 'b');
  await until(() => server.received.length === 2);
  server.ack = true;
  server.att.cut();
  await clock.tick(250);
  assert.equal(await a, undefined);
  assert.deepEqual(await b, { epoch: 'e1', offset: 1 }, 'a duplicate pub resolves with the position its first attempt got');
  assert.deepEqual(server.sockets[1].sent.filter((f) => f.seq).map((f) => f.seq), [1, 2], 'same seqs again');
  assert.equal(server.received.length, 2, 'processed once');
  ferry.close();
});

test('on SSE frames go by POST /send, and a POST whose response was lost is sent again', async () => {
  const { clock, server, ferry } = world({ websocket: 'fail' }, { token: 't0' });
  await until(() => ferry.transport === 'sse');
  server.lose = 1;
  const p = ferry.send({ x: 1 });
  await until(() => server.requests.filter((r) => r.path === '/send').length === 1);
  await clock.tick(250);
  await p;
  const posts = server.requests.filter((r) => r.path === '/send');
  assert.equal(posts.length, 2);
  for (const r of posts) {
    assert.equal(r.init.method, 'POST');
    assert.equal(r.init.headers['Content-Type'], 'application/json');
    assert.equal(r.init.headers.Authorization, 'Bearer t0');
    assert.equal(r.url.searchParams.get('session'), 'cred1');
    assert.deepEqual(JSON.parse(r.init.body), { frames: [{ t: 'send', d: { x: 1 }, seq: 1 }] });
  }
  assert.equal(server.received.length, 1);
  ferry.close();
});

test('frames queued during a POST go in the next one, in order', async () => {
  const { server, ferry } = world({ websocket: 'fail' });
  await until(() => ferry.transport === 'sse');
  const all = Promise.all([1, 2, 3, 4].map((i) => ferry.send(i)));
  await all;
  assert.deepEqual(server.received.map((f) => f.d), [1, 2, 3, 4]);
  const bodies = server.requests.filter((r) => r.path === '/send').map((r) => JSON.parse(r.init.body).frames.map((f) => f.seq));
  assert.deepEqual(bodies, [[1], [2, 3, 4]]);
  ferry.close();
});

test('a frame with no ack in sendTimeout rejects with a timeout', async () => {
  const { clock, server, ferry } = world({}, { sendTimeout: 5000 });
  await until(() => ferry.state === 'connected');
  server.ack = false;
  const p = ferry.send('x').catch((e) => e);
  await clock.tick(5000);
  const err = await p;
  assert.ok(err instanceof FerryError);
  assert.equal(err.code, 'timeout');
  ferry.close();
});

test('the queue is bounded: beyond maxQueue a send rejects at once', async () => {
  const { ferry } = world({ websocket: 'never', sse: 'never', longpoll: 'never' }, { maxQueue: 2 });
  const kept = [ferry.send(1), ferry.send(2)].map((p) => p.catch((e) => e));
  const err = await ferry.send(3).catch((e) => e);
  assert.ok(err instanceof FerryError);
  assert.equal(err.code, 'queue-full');
  ferry.close();
  for (const e of await Promise.all(kept)) assert.equal(e.code, 'closed');
});

test('after close, send rejects as closed', async () => {
  const { ferry } = world();
  ferry.close();
  const err = await ferry.send(1).catch((e) => e);
  assert.equal(err.code, 'closed');
});

test('a new session (4005) keeps the cid and the seq numbers: frames processed before it are not processed again', async () => {
  const { clock, server, ferry } = world();
  const got = [];
  ferry.subscribe('room:a', (d) => got.push(d));
  await until(() => ferry.state === 'connected' && server.att.subs.has('room:a'));
  server.publish('room:a', 1);
  await ferry.send('acked');
  server.ack = false; // processed, but the acks are lost with the session
  const lost = ferry.send('unacked-1');
  const lost2 = ferry.publish('room:a', 'unacked-2');
  await until(() => server.received.length === 3);
  server.ack = true;
  server.expireAll();
  server.att.end(4005);
  server.publish('room:a', 3);
  await clock.tick(0);
  assert.equal(await lost, undefined);
  assert.deepEqual(await lost2, { epoch: 'e1', offset: 2 }, 'the position of the first attempt');
  assert.equal(ferry.sid, 'sid2');
  const [first, second] = server.negotiations.map((n) => n.body);
  assert.match(first.cid, /^[A-Za-z0-9_-]{22}$/);
  assert.deepEqual(first, { cid: first.cid });
  assert.deepEqual(second, { cid: first.cid }, 'a fresh negotiate with the same cid');
  const resent = server.sockets.at(-1).sent.filter((f) => f.seq).map((f) => [f.seq, f.d]);
  assert.deepEqual(resent, [[2, 'unacked-1'], [3, 'unacked-2']], 'resent with their original seq');
  assert.deepEqual(server.received.map((f) => [f.sid, f.seq]), [['sid1', 1], ['sid1', 2], ['sid1', 3]], 'each processed once');
  assert.equal(cursorOf(server), 'room:a=e1.2');
  assert.deepEqual(got, [1, 'unacked-2', 3]);
  assert.deepEqual(await ferry.publish('room:a', 4), { epoch: 'e1', offset: 4 });
  assert.deepEqual(server.received.at(-1), { sid: 'sid2', t: 'pub', ch: 'room:a', d: 4, seq: 4 }, 'numbering goes on');
  ferry.close();
});

test('every client draws its own cid', async () => {
  const { server, ferry } = world();
  const other = server.client({ buffering: false });
  await until(() => server.negotiations.length === 2);
  const [a, b] = server.negotiations.map((n) => n.body.cid);
  assert.notEqual(a, b);
  ferry.close();
  other.close();
});

function cursorOf(server) {
  return server.conns.at(-1).params.get('cursor');
}

test('an ack with err 4029 (rate limited, or a duplicate with no outcome yet) sends the frame again after a backoff, not rejected', async () => {
  const { clock, server, ferry } = world();
  await until(() => ferry.state === 'connected');
  let calls = 0;
  server.refuse = () => ++calls <= 2 && { code: 4029, reason: 'rate limited: resend after a backoff' };
  const p = ferry.send('x');
  await until(() => calls === 1);
  // The backoff: full jitter over the first window, 250 ms × random() (0.5 here).
  await clock.tick(124);
  assert.equal(calls, 1, 'not before the backoff');
  await clock.tick(1);
  assert.equal(calls, 2, 'sent again after it');
  await clock.tick(15000); // past any backoff up to the maximum
  assert.equal(await p, undefined);
  assert.equal(calls, 3, 'refused twice, then sent again and processed');
  assert.equal(server.received.length, 1, 'processed once');
  ferry.close();
});

test('send rejections tell frames never sent (not-sent) from frames that went out (unknown)', async () => {
  const clock = new Clock();
  const server = new FakeServer(clock);
  server.ack = false; // frames on the WebSocket are processed, acks never come
  server.mode.websocket = 'never';
  const ferry = server.client({ sendTimeout: 1000, proofTimeout: 5000, maxQueue: 2, transports: ['websocket'] });
  const outcomes = [];
  const track = (p) => p.then(() => outcomes.push('ok'), (e) => outcomes.push(`${e.code}/${e.delivery}`));
  const a = track(ferry.send({ n: 1 })); // waits: no transport proved yet
  track(ferry.send({ n: 2 }));
  const full = track(ferry.send({ n: 3 }));
  await full;
  assert.deepEqual(outcomes, ['queue-full/not-sent']);
  await clock.tick(1000);
  await a;
  assert.deepEqual(outcomes.slice(1), ['timeout/not-sent', 'timeout/not-sent']);
  // Now one goes out and is processed, but its ack is lost.
  server.mode.websocket = 'ok';
  await clock.tick(5000);
  await clock.tick(1000); // the backoff after the failed round
  await until(() => ferry.state === 'connected');
  const b = track(ferry.send({ n: 4 }));
  await until(() => server.received.length === 1);
  await clock.tick(1000);
  await b;
  assert.equal(outcomes.at(-1), 'timeout/unknown');
  // Refused by the server: not processed.
  server.ack = true;
  server.refuse = () => ({ code: 4103, reason: 'forbidden' });
  await track(ferry.send({ n: 5 }));
  assert.equal(outcomes.at(-1), '4103/not-sent');
  server.refuse = null;
  // Closing with a frame in flight: unknown.
  server.ack = false;
  const c = track(ferry.send({ n: 6 }));
  await until(() => server.received.length === 2);
  ferry.close();
  await c;
  assert.equal(outcomes.at(-1), 'closed/unknown');
});
