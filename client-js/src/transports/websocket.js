import { stream } from './stream.js';

/** @type {import('./index.js').TransportFactory} */
export function websocket(o) {
  /** @type {import('./index.js').PlatformWebSocket | undefined} */
  let ws;
  const t = stream(o, 'ws', o.WebSocket, (s, end) => {
    ws = s;
    s.onerror = () => {}; // the close event follows
    s.onclose = (e) => end(e.code || 1006, e.reason || `ws-closed-${e.code || 1006}`);
  });
  return {
    ...t,
    /** @param {import('./index.js').Frame[]} frames */
    send_(frames) {
      if (ws?.readyState === 1) for (const f of frames) ws.send(JSON.stringify(f));
    },
  };
}
