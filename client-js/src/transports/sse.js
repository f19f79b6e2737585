import { stream } from './stream.js';
import { post } from './http.js';

/** @type {import('./index.js').TransportFactory} */
export function sse(o) {
  return {
    ...stream(o, 'sse', o.EventSource, (es, end) => {
      // EventSource would reconnect by itself, from the cursor in its URL and with no proof:
      // close it and let the client choose where to go.
      es.onerror = () => end(1006, 'sse-error');
    }),
    http_: true,
    send_: (frames) => post(o, frames),
  };
}
