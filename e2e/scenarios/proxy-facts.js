// proxy-facts: the nginx configurations really are as restrictive (or as open) as the browser
// scenarios assume, checked against the real server without a browser. If one of them
// stopped restricting (an nginx upgrade, a template edit), a browser scenario could pass for
// the wrong reason; this one would fail.
import http from 'node:http';
import { node, proxy } from '../lib/flow.js';
import { startNodes } from '../lib/ferry.js';
import { Nginx } from '../lib/nginx.js';

/** POST /ferry/negotiate directly on the node; returns the credential. */
async function negotiate(n) {
  const r = await fetch(`${n.url}/ferry/negotiate`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}',
  });
  if (!r.ok) throw new Error(`negotiate: HTTP ${r.status}`);
  return (await r.json()).session;
}

/**
 * GET url and watch it for `ms`: when the status line arrived, when the first body byte
 * arrived, how it ended. Resolves {status, headersAt, firstByteAt, endedAt, error, body}.
 */
function watch(url, ms, headers = {}) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const out = { status: 0, headersAt: null, firstByteAt: null, lastByteAt: null, endedAt: null, error: null, body: '' };
    const req = http.get(url, { headers: { 'Accept-Encoding': 'gzip', ...headers } }, (res) => {
      out.status = res.statusCode;
      out.headersAt = Date.now() - t0;
      out.encoding = res.headers['content-encoding'] || '';
      res.on('data', (c) => {
        out.firstByteAt ??= Date.now() - t0;
        out.lastByteAt = Date.now() - t0;
        if (out.body.length < 2000) out.body += c.toString('latin1');
      });
      res.on('end', () => { out.endedAt ??= Date.now() - t0; });
      res.on('aborted', () => { out.error ??= 'aborted'; out.endedAt ??= Date.now() - t0; });
      res.on('error', (e) => { out.error ??= e.code || e.message; out.endedAt ??= Date.now() - t0; });
    });
    req.on('error', (e) => { out.error ??= e.code || e.message; out.endedAt ??= Date.now() - t0; });
    setTimeout(() => { req.destroy(); resolve(out); }, ms);
  });
}

/**
 * A WebSocket handshake by hand; resolves {status, lastByteAt, closedAt} after watching for
 * `ms`. closedAt is when the proxy ended the connection: its FIN ('end') or a reset
 * ('close'), whichever came first, so a half-open socket is not mistaken for an open one.
 */
function wsHandshake(url, ms) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const out = { status: 0, lastByteAt: null, closedAt: null, error: null };
    const req = http.get(url, {
      headers: {
        Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==', Origin: new URL(url).origin,
      },
    });
    req.on('upgrade', (res, sock) => {
      out.status = res.statusCode;
      out.lastByteAt = Date.now() - t0;
      sock.on('data', () => { out.lastByteAt = Date.now() - t0; });
      sock.on('end', () => { out.closedAt ??= Date.now() - t0; });
      sock.on('close', () => { out.closedAt ??= Date.now() - t0; });
      sock.on('error', () => {});
      setTimeout(() => sock.destroy(), Math.max(0, ms - (Date.now() - t0)));
    });
    req.on('response', (res) => { out.status = res.statusCode; res.resume(); });
    req.on('error', (e) => { out.error = e.code || e.message; });
    setTimeout(() => { req.destroy(); resolve(out); }, ms);
  });
}

async function run(ctx) {
  // Default heartbeat (15 s) and poll hold (25 s): longer than idle-cut's 5 s.
  const n = await node(ctx, { flags: { heartbeat: '15s', 'poll-hold': '25s' } });
  const ng = {};
  for (const t of ['plain', 'no-upgrade', 'buffer-gzip', 'idle-cut']) ng[t] = await proxy(ctx, t, [n], t);
  // One session per probe: a session has one attachment, a newer one supersedes the older.
  const cred = async () => encodeURIComponent(await negotiate(n));
  const sse = async (u) => `${u}/ferry/sse?session=${await cred()}&cursor=room:facts=`;
  const ws = async (u) => `${u}/ferry/ws?session=${await cred()}&cursor=room:facts=`;
  const hello = async (u) => `${u}/ferry/poll?session=${await cred()}&cursor=room:facts=&hello=1`;
  // A poll with a position and no hello=1 has nothing to answer at once: it holds.
  const held = async (u, hold) => {
    const c = await cred();
    const first = await (await fetch(`${n.url}/ferry/poll?session=${c}&cursor=room:facts=&hello=1`)).json();
    const subf = first.frames.find((f) => f.t === 'sub');
    if (!subf) throw new Error(`hello poll: no sub frame in ${JSON.stringify(first)}`);
    return `${u}/ferry/poll?session=${c}&cursor=room:facts=${subf.ep}.${subf.off}&hold=${hold}`;
  };
  const facts = {};
  const [pSse, pWs, nuSse, nuWs, bgSse, bgWs, bgPoll, icSse, icPoll, icWs] = await Promise.all([
    sse(ng.plain.url).then((u) => watch(u, 1500)),
    ws(ng.plain.url).then((u) => wsHandshake(u, 1500)),
    sse(ng['no-upgrade'].url).then((u) => watch(u, 1500)),
    ws(ng['no-upgrade'].url).then((u) => wsHandshake(u, 1500)),
    sse(ng['buffer-gzip'].url).then((u) => watch(u, 4000)),
    ws(ng['buffer-gzip'].url).then((u) => wsHandshake(u, 1500)),
    hello(ng['buffer-gzip'].url).then((u) => watch(u, 2000)),
    sse(ng['idle-cut'].url).then((u) => watch(u, 12000)),
    held(ng['idle-cut'].url, 20000).then((u) => watch(u, 12000)),
    ws(ng['idle-cut'].url).then((u) => wsHandshake(u, 12000)),
  ]);
  Object.assign(facts, { pSse, pWs, nuSse, nuWs, bgSse, bgWs, bgPoll, icSse, icPoll, icWs });
  ctx.note(JSON.stringify(facts));

  ctx.check(pWs.status === 101, `plain: WebSocket handshake got ${pWs.status || pWs.error}, want 101`);
  ctx.check(pSse.firstByteAt !== null && pSse.firstByteAt < 1000, `plain: SSE first byte at ${pSse.firstByteAt} ms, want < 1000`);
  ctx.check(nuWs.status !== 101, `no-upgrade: WebSocket handshake got 101, the proxy forwarded Upgrade`);
  ctx.check(nuSse.firstByteAt !== null && nuSse.firstByteAt < 1000, `no-upgrade: SSE first byte at ${nuSse.firstByteAt} ms, want < 1000`);
  ctx.check(bgSse.headersAt === null && bgSse.firstByteAt === null, `buffer-gzip: SSE delivered something within 4 s (headers at ${bgSse.headersAt} ms), want nothing`);
  ctx.check(bgWs.status !== 101, `buffer-gzip: WebSocket handshake got 101`);
  ctx.check(bgPoll.status === 200 && bgPoll.endedAt !== null && bgPoll.endedAt < 1000 && bgPoll.encoding === 'gzip',
    `buffer-gzip: hello poll got ${bgPoll.status} ended at ${bgPoll.endedAt} ms encoding ${bgPoll.encoding || 'none'}, want 200 gzip < 1000 ms`);
  // nginx's proxy_read_timeout counts from the last byte either way, so a cut is timed from
  // the last byte the server sent (the request itself, for a poll that got nothing), not
  // from the start of the probe: under load the negotiate and handshake take their time.
  const quiet = (end, last) => end !== null && last !== null && end - last >= 4500 && end - last <= 7500;
  ctx.check(icSse.firstByteAt !== null && quiet(icSse.endedAt, icSse.lastByteAt),
    `idle-cut: quiet SSE stream ended at ${icSse.endedAt} ms, last byte at ${icSse.lastByteAt} ms, want cut ~5000 ms after it`);
  ctx.check(icPoll.status === 504 && quiet(icPoll.headersAt, 0),
    `idle-cut: 20 s poll hold got ${icPoll.status} at ${icPoll.headersAt} ms, want 504 at ~5000`);
  ctx.check(icWs.status === 101 && quiet(icWs.closedAt, icWs.lastByteAt),
    `idle-cut: quiet WebSocket got ${icWs.status}, closed at ${icWs.closedAt} ms, last byte at ${icWs.lastByteAt} ms, want 101 and closed ~5000 ms after it`);

  // lb: two nodes behind round-robin, no stickiness.
  const two = await startNodes(2, { dir: ctx.dir, name: 'lbnode' });
  for (const x of two) ctx.defer(() => x.stop(), `stop ${x.name}`);
  const lb = new Nginx({ dir: ctx.dir, template: 'lb', upstreams: two.map((x) => x.addr), name: 'lb' });
  ctx.defer(() => lb.stop(), 'stop lb');
  await lb.start();
  const seen = [];
  for (let i = 0; i < 4; i++) {
    const r = await fetch(`${lb.url}/healthz`);
    seen.push(r.headers.get('x-e2e-upstream'));
  }
  ctx.check(new Set(seen).size === 2 && seen[0] !== seen[1] && seen[1] !== seen[2],
    `lb: consecutive requests went to ${seen.join(', ')}, want alternating nodes`);
  ctx.result.transport = 'n/a (no browser)';
}

export const cases = [{ name: 'proxy-facts', run, timeout: 60000, weight: 10 }];
