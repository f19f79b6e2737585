// A platform constructor or fetch that throws is a failed attempt: the client says why in its
// `transport` event and moves on at once. These tests run under
// --unhandled-rejections=strict (package.json), so a throw that escapes as an unhandled
// rejection fails the run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Clock, FakeServer, until, retries } from './fakes.js';
import { FerryError } from '../src/index.js';

function setup(patch, opts) {
  const clock = new Clock();
  const server = new FakeServer(clock);
  const ferry = server.client({ ...patch(server), ...opts });
  const log = { transport: [], errors: [] };
  ferry.on('transport', (e) => log.transport.push(e));
  ferry.on('error', (e) => log.errors.push(e));
  return { clock, server, ferry, log };
}

test('a WebSocket constructor that throws SecurityError: SSE at once, the reason in the transport event', async () => {
  const { clock, ferry, log, server } = setup(() => ({
    WebSocket: class {
      constructor() {
        throw new DOMException("An insecure WebSocket connection may not be initiated from a page loaded over HTTPS.", 'SecurityError');
      }
    },
  }));
  await until(() => ferry.state === 'connected');
  assert.equal(clock.t, 1_700_000_000_000, 'no time passed');
  assert.equal(ferry.transport, 'sse');
  assert.equal(log.transport[1].from, 'websocket');
  assert.equal(log.transport[1].to, 'sse');
  assert.match(log.transport[1].reason, /^websocket threw SecurityError: An insecure WebSocket/);
  // The proof timer of the failed attempt is gone: nothing fires later.
  await clock.tick(10_000);
  assert.equal(ferry.transport, 'sse');
  assert.equal(server.streams.length, 1);
  ferry.close();
});

test('an EventSource constructor that throws: long-polling at once', async () => {
  const { clock, ferry, log } = setup(() => ({
    EventSource: class { constructor() { throw new SyntaxError('The URL is invalid'); } },
  }), { transports: ['sse', 'longpoll'] });
  await until(() => ferry.state === 'connected');
  assert.equal(clock.t, 1_700_000_000_000, 'no time passed');
  assert.equal(ferry.transport, 'longpoll');
  assert.match(log.transport.at(-1).reason, /^sse threw SyntaxError: The URL is invalid/);
  ferry.close();
});

test('every constructor throws: the round fails and backs off, then succeeds once one works', async () => {
  let broken = true;
  const { clock, ferry, server } = setup((s) => ({
    WebSocket: class extends s.WebSocket {
      constructor(url) {
        if (broken) throw new DOMException('blocked by CSP', 'SecurityError');
        super(url);
      }
    },
  }), { transports: ['websocket'] });
  await until(() => retries(server).length > 0, 'backing off');
  assert.equal(ferry.state, 'connecting');
  broken = false;
  await clock.tick(250);
  await until(() => ferry.state === 'connected');
  assert.equal(ferry.transport, 'websocket');
  assert.equal(server.sockets.length, 1);
  ferry.close();
});

test('fetch that rejects or throws: negotiate fails with an error event and the client retries', async () => {
  let calls = 0;
  const { clock, ferry, log } = setup((s) => ({
    fetch: (url, init) => {
      calls++;
      if (calls === 1) throw new TypeError('Failed to fetch (thrown)');
      if (calls === 2) return Promise.reject(new TypeError('Failed to fetch'));
      return s.fetch(url, init);
    },
  }));
  await until(() => log.errors.length === 1);
  assert.ok(log.errors[0] instanceof FerryError);
  assert.equal(log.errors[0].code, 'network');
  await clock.tick(250);
  await until(() => log.errors.length === 2);
  await clock.tick(500);
  await until(() => ferry.state === 'connected');
  assert.equal(ferry.transport, 'websocket');
  ferry.close();
});

test('a long-poll whose fetch rejects gives up after its retries and the walk moves on', async () => {
  const { clock, ferry, log } = setup((s) => ({
    fetch: (url, init) => (url.includes('/poll') ? Promise.reject(new TypeError('blocked')) : s.fetch(url, init)),
  }), { transports: ['longpoll', 'websocket'] });
  await until(() => log.transport.length === 1);
  await clock.tick(1000);
  await until(() => ferry.state === 'connected');
  assert.equal(ferry.transport, 'websocket');
  assert.match(log.transport.at(-1).reason, /^poll-failed: blocked/);
  ferry.close();
});

test('close() during a long-poll retry pause leaves no timer behind', async () => {
  const { clock, ferry } = setup((s) => ({
    fetch: (url, init) => (url.includes('/poll') ? Promise.reject(new TypeError('blocked')) : s.fetch(url, init)),
  }), { transports: ['longpoll'] });
  await until(() => clock.timers.size >= 2, 'a retry pause');
  ferry.close();
  assert.equal(clock.timers.size, 0, [...clock.timers.values()].map((t) => t.fn.toString()).join('\n'));
});

test('subscribing twice throws a FerryError', async () => {
  const { ferry } = setup(() => ({}));
  ferry.subscribe('a');
  assert.throws(() => ferry.subscribe('a'), (e) => e instanceof FerryError && e.code === 'already-subscribed');
  ferry.close();
});

test('a listener that throws is rethrown through the injected setTimeout, not the global one', async () => {
  const { clock, ferry } = setup(() => ({}));
  const boom = new Error('listener bug');
  ferry.on('state', () => { throw boom; });
  ferry.subscribe('a', () => { throw boom; });
  await until(() => ferry.state === 'connected');
  const pending = [...clock.timers.values()].filter((t) => /throw e/.test(t.fn.toString()));
  assert.equal(pending.length, 1, 'the state listener error waits on the injected clock');
  for (const t of pending) assert.throws(() => t.fn(), boom);
  ferry.close();
});
