import { attachUrl, parse } from './http.js';

/**
 * A transport over a platform object that streams frames to us (a WebSocket, an
 * EventSource): frames arrive as message events, anything that isn't a frame ends the
 * attachment, and `listen` wires the object's own end events to `end`.
 * @template {import('./index.js').PlatformStream} S
 * @param {import('./index.js').TransportOptions} o
 * @param {'ws' | 'sse'} name the path, and the prefix of this transport's close reasons
 * @param {new (url: string) => S} Platform
 * @param {(s: S, end: (code: number, reason: string) => void) => void} listen
 */
export function stream(o, name, Platform, listen) {
  /** @type {S | null} */
  let s = null;
  let done = false;
  const close = () => {
    // Events that follow are dropped here, and by the client, which knows this attachment ended.
    if (!done) s?.close();
    done = true;
  };
  /** @param {number} code @param {string} reason */
  const end = (code, reason) => {
    if (done) return;
    close();
    o.onClose_(code, reason);
  };
  return {
    open_() {
      // Browsers can't set headers on a WebSocket or an EventSource: the token travels in the query.
      const href = attachUrl(o, `/${name}`, { token: o.token_ });
      s = new Platform(name === 'ws' ? href.replace(/^http/, 'ws') : href);
      s.onmessage = (e) => {
        const f = parse(e.data);
        if (f) o.onFrame_(f);
        else end(1006, `${name}-bad-frame`);
      };
      listen(s, end);
    },
    close_: close,
  };
}
