import { url, parse, post } from './http.js';

/** @type {import('./index.js').TransportFactory} */
export function sse(o) {
  let es = null;
  let done = false;
  const end = (code, reason) => {
    if (done) return;
    done = true;
    es.close();
    o.onClose(code, reason);
  };
  return {
    http: true,
    open() {
      es = new o.EventSource(url(o.base, '/sse', { session: o.session, cursor: o.cursor(), token: o.token, att: o.att, from: o.from, reason: o.reason }));
      es.onmessage = (e) => {
        const f = parse(e.data);
        if (f) o.onFrame(f);
        else end(1006, 'sse-bad-frame');
      };
      // EventSource would reconnect by itself, from the cursor in its URL and with no proof:
      // close it and let the client choose where to go.
      es.onerror = () => end(1006, 'sse-error');
    },
    send: (frames) => post(o, frames),
    close() {
      done = true;
      es?.close();
    },
  };
}
