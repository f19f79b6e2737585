// cross-origin:<auth>: the app's page on one origin, Ferry on another (two server blocks of
// one nginx, cross-origin.conf), WebSocket and SSE blocked on Ferry's: the client lands on
// long-polling, cross-origin, and carries the stream for a while: every message once, in
// order, every send echoed. nginx keeps its upstream connections alive, so the polls reach
// Ferry on keep-alive connections, which Ferry takes over (its debug log says so for each);
// the answers given there must carry the CORS headers, or the browser hides them.
//   anonymous  no token, no cookies.
//   cookie     --token-key: the identity is a JWT in the ferry_token cookie, which the page
//              sends cross-origin (fetch with credentials: 'include'); Ferry must answer
//              with Access-Control-Allow-Credentials, and a request without the cookie is
//              refused, so every poll proves both.
import crypto from 'node:crypto';
import { expectPath, finish, node, page, proxy, publisher, steps } from '../lib/flow.js';
import { delay, freePort } from '../lib/util.js';

const LAND_WITHIN = 15000; // WebSocket and SSE fail first (403), then long-polling proves itself
const CARRY = 10000;
const TOKEN_KEY = 'e2e-cross-origin-token-key-0123456789';

/** An HS256 JWT for sub, valid for an hour. */
function jwt(sub) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, iat: now, exp: now + 3600 })}`;
  return `${head}.${crypto.createHmac('sha256', TOKEN_KEY).update(head).digest('base64url')}`;
}

function crossOriginCase(auth) {
  return {
    name: `cross-origin:${auth}`,
    weight: 25,
    timeout: 90000,
    async run(ctx) {
      const appPort = await freePort();
      const app = `http://127.0.0.1:${appPort}`;
      const flags = { 'allowed-origins': app };
      if (auth === 'cookie') flags['token-key'] = TOKEN_KEY;
      const n = await node(ctx, { flags });
      const ng = await proxy(ctx, 'cross-origin', [n], 'nginx', { port: appPort });
      const cookie = auth === 'cookie'
        ? { cookies: [{ name: 'ferry_token', value: jwt('e2e-user'), url: ng.url2, sameSite: 'Lax' }], credentials: true }
        : {};
      const h = await page(ctx, app, { base: `${ng.url2}/ferry`, ...cookie });
      const pub = publisher(ctx, n);
      const ok = await steps(ctx, async () => {
        ctx.result.land = await h.waitForTransport('longpoll', { timeout: LAND_WITHIN });
        await delay(CARRY); // the stream runs; nothing to wait for but time
      });
      await finish(ctx, pub, h);
      if (ok) expectPath(ctx, ['longpoll']);
      // The path under test was taken: polls reached Ferry on connections it took over.
      const takeOvers = n.grepLog(/poll connection taken over/).length;
      const polls = ng.accessEntries().filter((e) => e.request.includes('/ferry/poll?')).length;
      ctx.check(takeOvers > 0, `Ferry took no poll connection over (${polls} polls through nginx): the take-over path was not exercised`);
      ctx.result.extra = `${polls} polls, ${takeOvers} take-overs`;
      // Nothing was refused for its origin or its credentials.
      const refused = ng.accessEntries().filter((e) => e.request.includes('/ferry/') && (e.status === 401 || e.status === 403)
        && !/\/ferry\/(ws|sse)\?/.test(e.request));
      ctx.check(refused.length === 0, `${refused.length} requests refused, e.g. ${refused[0]?.request} ${refused[0]?.status}`);
    },
  };
}

export const cases = ['anonymous', 'cookie'].map(crossOriginCase);
