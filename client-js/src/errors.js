/**
 * The one error type of the client. `code` is a close code of §7 when the server refused
 * something (an ack or unsub with err, a close frame, an HTTP error body), or one of the
 * client's own string codes: 'timeout', 'queue-full', 'closed', 'network', 'no-transport',
 * 'already-subscribed'.
 */
export class FerryError extends Error {
  name = /** @type {const} */ ('FerryError');

  /**
   * @param {number | import('./index.js').ClientErrorCode} code @param {string} reason
   * @param {import('./index.js').Delivery} [delivery] set on rejections of send and publish:
   *   'not-sent' when the server certainly did not process the frame (safe to send again),
   *   'unknown' when it went out and may have been processed.
   */
  constructor(code, reason, delivery) {
    super(`ferry: ${reason} (${code})`);
    this.code = code;
    this.reason = reason;
    if (delivery) this.delivery = delivery;
  }
}
