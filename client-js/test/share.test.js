// Tabs sharing one session (share.js, share: true): Web Locks (a fake with the API's queueing) and
// Node's own BroadcastChannel, against the fake server.
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { Clock, FakeServer, Locks, until } from './fakes.js';
import { Ferry as FromSrc } from '../src/share.js';
import { Ferry as FromDist } from '../dist/share.js';

// Everything runs against src/share.js and against the built dist/share.js, which imports
// dist/client.js (its internal names must agree with the base bundle's: build.mjs).
for (const [where, Ferry] of /** @type {const} */ ([['src', FromSrc], ['dist', FromDist]])) {
  let clock;
  let server;
  let tabs;
  beforeEach(() => {
    globalThis.navigator = { locks: new Locks() };
    clock = new Clock();
    server = new FakeServer(clock);
    tabs = [];
  });
  afterEach(() => {
    for (const t of tabs) t.close();
    delete globalThis.navigator;
  });

  const tab = (extra) => {
    const t = server.client({ share: true, buffering: false, upgradeProbe: { min: 1e9, max: 1e9 }, ...extra }, Ferry);
    tabs.push(t);
    return t;
  };
  const attachments = () => server.conns.filter((c) => !c.ended).length;

  /** Waits, running timers and the tabs' messages, until cond holds. */
  async function eventually(cond, what) {
    for (let i = 0; i < 200; i++) {
      if (cond()) return;
      await new Promise((r) => setTimeout(r, 1));
      await clock.tick(50);
    }
    assert.fail(`never reached: ${what}`);
  }

  test(`${where}: two tabs, one session and one attachment; each gets its own channels; the follower sends through the leader`, async () => {
    const a = tab();
    const b = tab();
    const events = [];
    b.on('state', (e) => events.push(`state ${e.state} ${e.transport}`));
    b.on('transport', (e) => events.push(`transport ${e.to} ${e.reason}`));
    const gotA = [];
    const gotB = [];
    a.subscribe('room:a', (d) => gotA.push(d));
    b.subscribe('room:b', (d) => gotB.push(d));
    await eventually(() => a.state === 'connected' && b.state === 'connected' && server.att?.subs.size === 2, 'both connected, both channels carried');
    assert.deepEqual([a.shared, b.shared], ['leader', 'follower']);
    assert.equal(attachments(), 1);
    assert.equal(b.sid, a.sid);
    assert.equal(b.transport, 'websocket');
    assert.deepEqual(events, ['transport websocket connect', 'state connected websocket'], 'the follower sees the leader’s events');
    server.publish('room:a', 1);
    server.publish('room:b', 2);
    await eventually(() => gotA.length && gotB.length, 'the messages');
    assert.deepEqual([gotA, gotB], [[1], [2]]);
    // Upstream: each tab numbers its frames under its own cid; the leader carries them.
    assert.deepEqual(await b.publish('room:a', 'from b'), { epoch: 'e1', offset: 2 });
    await b.send('b');
    await a.send('a');
    assert.deepEqual(server.received.map((f) => [f.t, f.seq, f.d]), [['pub', 1, 'from b'], ['send', 2, 'b'], ['send', 1, 'a']]);
    const cids = server.negotiations.map((n) => n.body.cid);
    assert.equal(new Set(cids).size, 3, 'the leader’s own, and one per tab that sent');
    await eventually(() => gotA.length === 2, 'the publish');
    assert.deepEqual(gotA, [1, 'from b']);
  });

  test(`${where}: the leader closes: the other tab leads, resumes from its positions, and resends what was unacked`, async () => {
    const a = tab();
    const b = tab();
    const gotB = [];
    b.subscribe('room:a', (d) => gotB.push(d));
    await eventually(() => b.state === 'connected' && server.att?.subs.has('room:a'), 'connected');
    server.publish('room:a', 1);
    await eventually(() => gotB.length === 1, 'first message');
    server.lose = 1; // b's frame is processed, its response lost with the leader
    let sent = false;
    b.send('once').then(() => (sent = true));
    await eventually(() => server.received.length === 1, 'processed once');
    a.close();
    server.publish('room:a', 2);
    await eventually(() => b.shared === 'leader' && b.state === 'connected', 'b leads');
    server.publish('room:a', 3);
    await eventually(() => sent, 'the send acknowledged');
    await eventually(() => gotB.length === 3, 'everything');
    assert.deepEqual(gotB, [1, 2, 3], 'nothing lost, nothing twice');
    assert.equal(server.received.length, 1, 'the resend was a duplicate');
    assert.equal(attachments(), 1);
  });

  test(`${where}: a tab that goes away stops counting: the leader drops the channels no tab follows`, async () => {
    const a = tab();
    const b = tab();
    a.subscribe('room:a');
    b.subscribe('room:b');
    await eventually(() => server.att?.subs.size === 2 && b.shared === 'follower', 'both channels carried');
    b.close();
    await eventually(() => !server.att.subs.has('room:b'), 'room:b dropped');
    assert.ok(server.att.subs.has('room:a'));
  });

  test(`${where}: a tab that vanishes without a word (a crash) is noticed by its lock`, async () => {
    const a = tab();
    const b = tab();
    a.subscribe('room:a');
    b.subscribe('room:b');
    await eventually(() => server.att?.subs.size === 2 && b.shared === 'follower', 'both channels carried');
    // Its lock comes free, nothing else: no bye, no unsubscribe.
    const tabLocks = [...navigator.locks.held.keys()].filter((k) => k.includes(' ')); // a's, then b's
    assert.equal(tabLocks.length, 2);
    navigator.locks.held.get(tabLocks[1]).release();
    await eventually(() => !server.att.subs.has('room:b'), 'room:b dropped');
    assert.ok(server.att.subs.has('room:a'));
  });

  test(`${where}: tabs of different identities never share`, async () => {
    const a = tab({ token: 'alice' });
    const b = tab({ token: 'bob' });
    await eventually(() => a.shared === 'leader' && b.shared === 'leader', 'each leads its own group');
    const fresh = server.negotiations.filter((n) => !n.body.session).map((n) => n.headers.Authorization).sort();
    assert.deepEqual(fresh, ['Bearer alice', 'Bearer bob'], 'a session each');
  });

  test(`${where}: a token refreshed in a follower reaches the shared session`, async () => {
    const jwt = (exp) => `h.${Buffer.from(JSON.stringify({ sub: 'carol', exp })).toString('base64url')}.s`;
    let leaderToken = jwt(100);
    const a = tab({ token: () => leaderToken });
    const b = tab({ token: () => jwt(200) }); // this tab's app already has a newer one
    await eventually(() => a.state === 'connected' && b.shared === 'follower', 'shared');
    server.att.end(4006, 'token expired');
    await eventually(() => server.negotiations.length >= 2 && a.state === 'connected', 'renegotiated');
    assert.equal(server.negotiations.at(-1).headers.Authorization, `Bearer ${jwt(200)}`);
  });

  test(`${where}: without Web Locks every tab connects on its own`, async () => {
    delete globalThis.navigator;
    const a = tab();
    await until(() => a.state === 'connected');
    assert.equal(a.shared, 'off');
  });
}
