import { url, parse } from './http.js';

/** @type {import('./index.js').TransportFactory} */
export function websocket(o) {
  let ws = null;
  let done = false;
  const end = (code, reason) => {
    if (done) return;
    done = true;
    ws.close();
    o.onClose(code, reason);
  };
  return {
    open() {
      // Browsers can't set headers on a WebSocket: the token travels in the query.
      const href = url(o.base, '/ws', { session: o.session, cursor: o.cursor(), token: o.token, att: o.att, from: o.from, reason: o.reason });
      ws = new o.WebSocket(href.replace(/^http/, 'ws'));
      ws.onmessage = (e) => {
        const f = parse(e.data);
        if (f) o.onFrame(f);
        else end(1006, 'ws-bad-frame');
      };
      // Some platforms (the ws package) throw on an error event nobody listens to; close follows.
      ws.onerror = () => {};
      ws.onclose = (e) => end(e.code || 1006, e.reason || `ws-closed-${e.code || 1006}`);
    },
    send(frames) {
      if (ws.readyState === 1) for (const f of frames) ws.send(JSON.stringify(f));
    },
    close() {
      if (done || !ws) return void (done = true);
      done = true;
      ws.onmessage = ws.onclose = null;
      ws.close();
    },
  };
}
