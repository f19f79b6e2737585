// The entry `@ferryrt/client/memory` (from a Ferry server: /ferry/memory.js): remembers, per
// origin, the transport that last proved itself, so that the next client starts there.
import type { StorageLike, TransportMemory } from './index.js';

export interface RememberOptions {
  /** ms a transport is remembered; 0 remembers nothing. Default 600000. */
  ttl?: number;
  /** Where it is remembered. Default localStorage when there is one; null: in this page only. */
  storage?: StorageLike | null;
  /** The clock. Default Date.now. */
  now?: () => number;
}

/** A memory for the `transportMemory` option of Ferry. */
export declare function rememberTransport(options?: RememberOptions): TransportMemory;
