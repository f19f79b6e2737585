// Against the real server: builds cmd/ferry, starts it on a free port, and runs the same
// scenario over each transport with the Node stand-ins for the browser's constructors.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import WebSocket from 'ws';
import { EventSource } from 'eventsource';
import { Ferry as Base } from '../src/index.js';
import { presence, presenceFeed } from '../src/presence.js';

// Every client a test opens is closed after it, also when the test fails or times out: a
// client left open keeps reconnecting (to a server that `after` has stopped) and keeps this
// process alive, so `node --test` never ends instead of reporting the failure.
const open = new Set();
class Ferry extends Base {
  constructor(...args) {
    super(...args);
    open.add(this);
  }
}
afterEach(() => {
  for (const f of open) f.close();
  open.clear();
});
// A test that waits for an event that never comes fails after this instead of hanging.
const LIMIT = { timeout: 120_000 };

const root = fileURLToPath(new URL('../../', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'ferry-it-'));
const bin = join(dir, 'ferry');
let proc;
let base;
const extra = []; // servers started by single tests

/** Resolves with the address the server logs once it listens (it was told port 0). */
function listening(child) {
  return new Promise((resolve, reject) => {
    let out = '';
    const look = (chunk) => {
      out += chunk;
      const m = /ferry listening.*?addr=(\S+)/.exec(out);
      if (m) resolve(m[1]);
    };
    child.stdout.on('data', look);
    child.stderr.on('data', look);
    child.on('exit', (code) => reject(new Error(`server exited (${code}) before listening:\n${out}`)));
  });
}

/**
 * Starts the server binary with these flags; resolves with its process and base URL. It
 * keeps no data directory: the default one (in HOME) would carry channels over from
 * earlier runs, and its lock would refuse a second server.
 */
async function start(flags) {
  const child = spawn(bin, ['--addr', '127.0.0.1:0', '--data-dir', 'none', '--api-key', 'test-key', '--demo=false', ...flags], { stdio: ['ignore', 'pipe', 'pipe'] });
  return { child, base: `http://${await listening(child)}/ferry` };
}

before(async () => {
  await promisify(execFile)('go', ['build', '-o', bin, './cmd/ferry'], { cwd: root });
  ({ child: proc, base } = await start(['--heartbeat', '1s', '--poll-hold', '2s']));
});

after(() => {
  for (const p of [proc, ...extra]) if (p && p.exitCode === null) process.kill(p.pid, 'SIGTERM');
  rmSync(dir, { recursive: true, force: true });
});

async function publish(channel, data, at = base) {
  const res = await fetch(`${at}/api/publish`, {
    method: 'POST',
    headers: { Authorization: 'Bearer test-key', 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel, data }),
  });
  assert.equal(res.status, 200, await res.clone().text());
  return res.json();
}

/** Resolves when emitter fires event with a payload that pred accepts. */
const when = (emitter, event, pred = () => true) =>
  new Promise((resolve) => {
    const fn = (e) => pred(e) && (emitter.off(event, fn), resolve(e));
    emitter.on(event, fn);
  });

for (const transport of ['websocket', 'sse', 'longpoll']) {
  test(`${transport}: 300 messages in order exactly once, 50 upstream messages acked`, LIMIT, async () => {
    const ferry = new Ferry(base, {
      transports: [transport],
      WebSocket,
      EventSource,
      online: null,
    });
    const errors = [];
    ferry.on('error', (e) => errors.push(e));
    try {
      await when(ferry, 'state', (e) => e.state === 'connected');
      assert.equal(ferry.transport, transport);

      const channel = `room:it-${transport}`;
      const got = [];
      let done;
      const all = new Promise((r) => (done = r));
      const sub = ferry.subscribe(channel, (data, meta) => {
        got.push([data, meta.offset]);
        if (got.length === 300) done();
      });
      await when(sub, 'subscribed');
      for (let i = 1; i <= 300; i++) await publish(channel, { i });
      await all;
      assert.deepEqual(got, Array.from({ length: 300 }, (_, k) => [{ i: k + 1 }, k + 1]));

      const echoes = [];
      let echoed;
      const fifty = new Promise((r) => (echoed = r));
      const echo = ferry.subscribe(`$session:${ferry.sid}`, (data) => {
        echoes.push(data);
        if (echoes.length === 50) echoed();
      });
      await when(echo, 'subscribed');
      const acks = await Promise.all(Array.from({ length: 50 }, (_, k) => ferry.send({ n: k })));
      assert.equal(acks.length, 50);
      const pos = await ferry.publish(channel, { i: 301 });
      assert.deepEqual(pos, { epoch: sub.position.epoch, offset: 301 });
      // The server's echo handler sends every upstream payload back on the session's channel.
      await fifty;
      assert.deepEqual(echoes.map((e) => e.echo), Array.from({ length: 50 }, (_, n) => ({ n })));
      assert.deepEqual(errors, []);
    } finally {
      ferry.close();
    }
  });
}

test('moving up from long-polling to WebSocket against the real server loses and repeats nothing', LIMIT, async () => {
  // The first WebSocket goes nowhere (as behind a proxy that strips Upgrade); later ones work.
  let blocked = 1;
  class FlakyWebSocket extends WebSocket {
    constructor(url) {
      super(blocked-- > 0 ? 'ws://127.0.0.1:1/' : url);
    }
  }
  const ferry = new Ferry(base, {
    transports: ['websocket', 'longpoll'],
    WebSocket: FlakyWebSocket,
    online: null,
    upgradeProbe: { min: 300, max: 300 },
  });
  const moves = [];
  ferry.on('transport', (e) => moves.push(e));
  try {
    await when(ferry, 'state', (e) => e.state === 'connected');
    assert.equal(ferry.transport, 'longpoll');
    const channel = 'room:it-upgrade';
    const got = [];
    const sub = ferry.subscribe(channel, (data) => got.push(data.i));
    await when(sub, 'subscribed');
    const upgraded = when(ferry, 'transport', (e) => e.to === 'websocket');
    let i = 0;
    // Publish all through the move: before, during and after it.
    while (!moves.some((m) => m.to === 'websocket' && m.reason === 'upgrade')) {
      await publish(channel, { i: ++i });
      if (i > 5000) assert.fail('never upgraded');
    }
    await upgraded;
    for (let k = 0; k < 20; k++) await publish(channel, { i: ++i });
    const last = i;
    while (got.length < last) await when(ferry, 'message');
    assert.deepEqual(got, Array.from({ length: last }, (_, k) => k + 1));
    assert.equal(ferry.transport, 'websocket');
  } finally {
    ferry.close();
  }
});

test('presence: the feed join shows who subscribes; presence() lists the members', LIMIT, async () => {
  const opts = { transports: ['websocket'], WebSocket, EventSource, online: null };
  const a = new Ferry(base, opts);
  const b = new Ferry(base, { ...opts, transports: ['sse'] });
  try {
    const channel = 'room:presence-it';
    const subA = a.subscribe(channel, () => {});
    await when(subA, 'subscribed');
    // The feed is subscribed from now: B joins only once that subscription stands, or its
    // join could come before it.
    const feed = presenceFeed(subA);
    const joined = when(feed, 'join', (m) => m.session === b.sid);
    if (feed.state !== 'subscribed') await when(feed, 'subscribed');
    const subB = b.subscribe(channel, () => {});
    await when(subB, 'subscribed');
    await joined;
    const members = (await presence(subA)).map((m) => m.session).sort();
    assert.deepEqual(members, [a.sid, b.sid].sort());
  } finally {
    a.close();
    b.close();
  }
});

/** The value of a metric line of the server's /metrics (Prometheus text), or 0. */
async function metric(at, line) {
  const text = await (await fetch(new URL('/metrics', at))).text();
  const m = text.split('\n').find((l) => l.startsWith(`${line} `));
  return m ? Number(m.slice(line.length + 1)) : 0;
}

/** Polls cond (async) until it holds, with a deadline. */
async function poll(cond, what, ms = 20000) {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) assert.fail(`never reached: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('a frame processed before its ack was lost, then 4005: resent with its seq under a new session, processed once, publish resolves with its position', LIMIT, async () => {
  const s = await start(['--heartbeat', '1s', '--poll-hold', '1s', '--session-ttl', '2s']);
  extra.push(s.child);
  let dropAcks = false;
  let blocked = false;
  const sockets = [];
  const sent = [];
  // A WebSocket whose acks can be lost, and a network that can go away (WebSocket and fetch).
  class LossyWebSocket extends WebSocket {
    constructor(url) {
      super(blocked ? 'ws://127.0.0.1:1/' : url);
      sockets.push(this);
    }
    set onmessage(fn) {
      super.onmessage = (e) => (dropAcks && JSON.parse(e.data).t === 'ack' ? undefined : fn(e));
    }
    send(text) {
      sent.push([sockets.length, JSON.parse(text)]);
      super.send(text);
    }
  }
  const lossyFetch = (url, init) => (blocked ? Promise.reject(new TypeError('network down')) : fetch(url, init));
  const opts = { transports: ['websocket'], WebSocket: LossyWebSocket, fetch: lossyFetch, online: null, backoff: { min: 50, max: 200 } };
  const ferry = new Ferry(s.base, opts);
  const observer = new Ferry(s.base, { transports: ['websocket'], WebSocket, online: null });
  const channel = 'room:it-cid';
  const seen = [];
  try {
    const connected = when(ferry, 'state', (e) => e.state === 'connected');
    const watch = observer.subscribe(channel, (data, { offset }) => seen.push([data, offset]));
    await when(watch, 'subscribed');
    await connected;
    const firstSid = ferry.sid;
    await ferry.send('warm-up'); // seq 1, acked
    dropAcks = true;
    const p = ferry.publish(channel, { n: 1 }); // seq 2: processed, its ack lost
    await poll(() => seen.length === 1, 'the publish processed');
    blocked = true;
    sockets.at(-1).terminate();
    await when(ferry, 'state', (e) => e.state === 'reconnecting');
    // The session expires while the client cannot reach the server (the observer's stays).
    await poll(async () => (await metric(s.base, 'ferry_sessions')) === 1, 'the session expired', 10000);
    dropAcks = false;
    blocked = false;
    const pos = await p;
    assert.notEqual(ferry.sid, firstSid, 'a new session');
    assert.deepEqual(pos, { epoch: watch.position.epoch, offset: 1 }, 'the position of the first attempt');
    const pubs = sent.filter(([, f]) => f.t === 'pub');
    assert.ok(pubs.length >= 2, 'sent again');
    assert.ok(pubs.every(([, f]) => f.seq === 2), `always as seq 2: ${JSON.stringify(pubs)}`);
    assert.equal(await metric(s.base, 'ferry_upstream_total{outcome="duplicate"}'), 1, 'the resend was answered as a duplicate');
    // Everything published before the marker has reached the observer once the marker has.
    await publish(channel, 'marker', s.base);
    await poll(() => seen.some(([d]) => d === 'marker'), 'the marker');
    assert.deepEqual(seen, [[{ n: 1 }, 1], ['marker', 2]], 'processed once');
    assert.deepEqual(await ferry.publish(channel, { n: 2 }), { epoch: watch.position.epoch, offset: 3 });
    assert.equal(sent.filter(([, f]) => f.t === 'pub').at(-1)[1].seq, 3, 'numbering goes on');
  } finally {
    ferry.close();
    observer.close();
  }
});
