// Compiled by tsc (tsconfig.src.json, run by types.test.js), never run. The shipped
// declarations (src/index.d.ts) are written by hand; here tsc checks that the implementation
// fits them: every declared class, member, function and constant exists in src/ with a type
// the declaration allows. A member renamed, removed or retyped on either side fails the check.
import { Ferry } from '../src/ferry.js';
import { Subscription } from '../src/subscription.js';
import { FerryError } from '../src/errors.js';
import { shouldReconnect, isTerminal } from '../src/reconnect.js';
import { CloseCodes } from '../src/codes.js';

/** @typedef {typeof import('../src/index.js')} Declared src/index.d.ts, which tsc prefers over index.js */

/** @type {Declared['Ferry']} */
export const ferry = Ferry;
// Apps get subscriptions from subscribe() and never construct one: compare instances.
/** @param {Subscription} s @returns {InstanceType<Declared['Subscription']>} */
export const subscription = (s) => s;
/** @type {Declared['FerryError']} */
export const ferryError = FerryError;
/** @type {Declared['shouldReconnect']} */
export const reconnect = shouldReconnect;
/** @type {Declared['isTerminal']} */
export const terminal = isTerminal;

import { Ferry as SharedFerry } from '../src/share.js';
/** @typedef {typeof import('../src/share.js')} DeclaredShare src/share.d.ts */
/** @type {DeclaredShare['Ferry']} */
export const sharedFerry = SharedFerry;

// tsc resolves ../src/codes.js to codes.d.ts here too: this checks that the entry declares the
// table; codes.test.js checks the values, and tsconfig.src.json checks codes.js itself.
/** @typedef {typeof import('../src/codes.js')} DeclaredCodes src/codes.d.ts */
/** @type {DeclaredCodes['CloseCodes']} */
export const closeCodes = CloseCodes;

import { rememberTransport } from '../src/memory.js';
/** @typedef {typeof import('../src/memory.js')} DeclaredMemory src/memory.d.ts (the same resolution) */
/** @type {DeclaredMemory['rememberTransport']} */
export const remember = rememberTransport;

import { presence, presenceFeed } from '../src/presence.js';
/** @typedef {typeof import('../src/presence.js')} DeclaredPresence src/presence.d.ts (the same resolution) */
/** @type {DeclaredPresence['presence']} */
export const presenceNow = presence;
/** @type {DeclaredPresence['presenceFeed']} */
export const feed = presenceFeed;
