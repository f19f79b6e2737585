// The close-code table of docs/PROTOCOL.md §7, with each code's name: the entry
// `@ferryrt/client/codes` (dist/codes.js), for apps that show or log the names. The base client
// only needs the reconnect rule, which reconnect.js holds without the names (a test checks
// that both agree). session/close.go holds the same rows and a Go test parses this literal to
// keep the two identical: keep one entry per line, in this form.
/** @type {{ readonly [code: number]: { readonly name: string, readonly reconnect: boolean } }} */
export const CloseCodes = {
  1000: { name: 'normal', reconnect: false },
  1001: { name: 'going away', reconnect: true },
  1006: { name: 'abnormal', reconnect: true },
  1007: { name: 'invalid payload', reconnect: false },
  1008: { name: 'policy violation', reconnect: false },
  1009: { name: 'message too big', reconnect: false },
  1011: { name: 'internal error', reconnect: true },
  4000: { name: 'reconnect', reconnect: true },
  4001: { name: 'superseded', reconnect: false },
  4002: { name: 'slow consumer', reconnect: true },
  4003: { name: 'server shutting down', reconnect: true },
  4004: { name: 'heartbeat timeout', reconnect: true },
  4005: { name: 'session unknown or expired', reconnect: true },
  4006: { name: 'token expired', reconnect: true },
  4029: { name: 'rate limited', reconnect: true },
  4100: { name: 'bad request', reconnect: false },
  4101: { name: 'unauthorized', reconnect: false },
  4103: { name: 'forbidden', reconnect: false },
  4104: { name: 'no upstream handler', reconnect: false },
};

