// The reconnect rule of docs/PROTOCOL.md §7, without the table (codes.js, a separate entry,
// holds the table with each code's name; test/codes.test.js checks the two agree).

// Below 4100, the codes that end a session: normal, invalid payload, policy violation,
// message too big, superseded. Every other code below 4100 reconnects.
const TERMINAL = [1000, 1007, 1008, 1009, 4001];

/**
 * Whether a client should reconnect (and resume) after `code`: 4000-4099 and 4500-4749
 * reconnect, the rest of 4000-4999 is terminal. Codes below 4000 that Ferry doesn't send come
 * from a proxy or the platform (1005, 1012, 1013...), so they are treated like a dropped
 * connection.
 * @param {number} code
 */
export const shouldReconnect = (code) => !TERMINAL.includes(code) && (code < 4100 || (code >= 4500 && code < 4750));

/** @param {number} code */
export const isTerminal = (code) => !shouldReconnect(code);
