// Binary payloads travel as standard base64 in `b` (PROTOCOL.md §3).

/** @param {Uint8Array} u8 */
const toB64 = (u8) => {
  let s = '';
  for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode(...u8.subarray(i, i + 0x8000));
  return btoa(s);
};

/** The payload fields of a send or pub frame. @param {unknown} data */
export const payload = (data) =>
  data instanceof ArrayBuffer ? { b: toB64(new Uint8Array(data)) }
  : ArrayBuffer.isView(data) ? { b: toB64(new Uint8Array(data.buffer, data.byteOffset, data.byteLength)) }
  : { d: data ?? null };

/** The payload of a msg frame. @param {{[field: string]: unknown}} f */
export const data = (f) => (typeof f.b === 'string' ? Uint8Array.from(atob(f.b), (c) => c.charCodeAt(0)) : f.d);
