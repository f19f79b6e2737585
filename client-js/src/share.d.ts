// The entry of the client that shares one connection per browser (README, "One connection
// per browser"): everything the base client exports, with a Ferry that takes `share: true`.
import { Ferry as BaseFerry } from './index.js';
import type { FerryOptions } from './index.js';

export * from './index.js';

export interface ShareOptions extends FerryOptions {
  /**
   * Share one session and one connection with the other tabs of this origin that use the
   * same URL and identity (token subject). Needs Web Locks and BroadcastChannel; without
   * them each tab connects on its own. Default false: see README, "One connection per browser".
   */
  share?: boolean;
}

export declare class Ferry extends BaseFerry {
  constructor(url: string, options?: ShareOptions);
  /** With `share`: 'leader' when this tab carries the shared session, 'follower' when another does; else 'off'. */
  readonly shared: 'leader' | 'follower' | 'off';
}
