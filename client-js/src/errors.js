/**
 * The one error type of the client. `code` is a close code of §7 when the server refused
 * something (an ack or unsub with err, a close frame, an HTTP error body), or one of the
 * client's own string codes: 'timeout', 'queue-full', 'closed', 'network', 'no-transport',
 * 'already-subscribed'.
 */
export class FerryError extends Error {
  /** @param {number|string} code @param {string} reason */
  constructor(code, reason) {
    super(`ferry: ${reason} (${code})`);
    this.name = 'FerryError';
    this.code = code;
    this.reason = reason;
  }
}
