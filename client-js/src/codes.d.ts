// The entry `@ferryrt/client/codes` (from a Ferry server: /ferry/codes.js): the close-code
// table of PROTOCOL.md §7 with each code's name, for apps that show or log them. The base
// client decides reconnects without it (shouldReconnect, isTerminal).

export interface CloseCode {
  readonly name: string;
  /** Whether a client reconnects (and resumes) after this code. */
  readonly reconnect: boolean;
}

/** The close-code table of PROTOCOL.md §7, shared with the server. */
export declare const CloseCodes: { readonly [code: number]: CloseCode };
