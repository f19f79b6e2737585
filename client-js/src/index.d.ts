// Public API of @ferryrt/client. The wire protocol behind it: docs/PROTOCOL.md.

export type TransportName = 'websocket' | 'sse' | 'longpoll';

/** 'connecting' until the first transport proves itself, 'reconnecting' after a loss. */
export type State = 'connecting' | 'connected' | 'reconnecting' | 'disconnected';

/** A place in a channel: its epoch and the offset of a message (0 before the first). */
export interface Position {
  epoch: string;
  offset: number;
}

/** Codes of errors that the client detects itself (server codes are numbers: the close codes of PROTOCOL.md §7, named in the `codes` entry). */
export type ClientErrorCode = 'timeout' | 'queue-full' | 'closed' | 'network' | 'no-transport' | 'already-subscribed';

export declare class FerryError extends Error {
  constructor(code: number | ClientErrorCode, reason: string, delivery?: Delivery);
  readonly name: 'FerryError';
  /** A close code of PROTOCOL.md §7 when the server refused something, else a client code. */
  readonly code: number | ClientErrorCode;
  readonly reason: string;
  /**
   * On rejections of send() and publish(): 'not-sent' when the server certainly did not
   * process the frame (never sent, or refused), so sending it again is safe; 'unknown' when
   * it went out and may have been processed (a timeout, the client closed while waiting).
   */
  readonly delivery?: Delivery;
}

export type Delivery = 'not-sent' | 'unknown';

/** Whether to reconnect (and resume) after `code`, by the table and the ranges of PROTOCOL.md §7. */
export declare function shouldReconnect(code: number): boolean;
export declare function isTerminal(code: number): boolean;

export interface StateEvent {
  state: State;
  /** The transport carrying the session when connected, else null. */
  transport: TransportName | null;
  /** Why the connection ended ('reconnecting', 'disconnected'). */
  code?: number | ClientErrorCode;
  reason?: string;
}

/**
 * Why the client chose a transport: 'connect' (first choice), 'reconnect' (a new round),
 * 'remembered' (the last one that worked on this origin), 'upgrade' (a background probe
 * proved a better one), 'buffering' (a proxy held the stream), 'benched' (the preferred one
 * kept failing, see README), or why the previous one failed
 * its proof: 'proof-timeout', 'ws-closed-<code>', 'sse-error', 'poll-failed: …', a server reason.
 */
export type TransportReason =
  | 'connect' | 'reconnect' | 'remembered' | 'upgrade' | 'buffering' | 'benched' | 'proof-timeout' | 'sse-error'
  | `ws-closed-${number}`
  | (string & {});

export interface TransportEvent {
  from: TransportName | null;
  to: TransportName;
  reason: TransportReason;
}

export interface MessageMeta {
  channel: string;
  epoch: string;
  offset: number;
}

export interface ChannelMessage<T = unknown> extends MessageMeta {
  data: T;
}

export interface FerryEvents {
  state: (e: StateEvent) => void;
  /** Every switch of transport, tried or proven, with why. */
  transport: (e: TransportEvent) => void;
  /** Negotiation failures, terminal closes, and a transport benched for failing again and again. */
  error: (e: FerryError) => void;
  /** Every new message of every subscription (after duplicates are dropped). */
  message: (e: ChannelMessage) => void;
}

export interface ResetEvent extends Position {
  reason: string;
}

export interface SubscriptionEvents {
  /** The server confirmed the subscription; messages continue after this position. */
  subscribed: (p: Position) => void;
  /** Ended by unsubscribe() (code 1000) or by the server (its code and reason). */
  unsubscribed: (e: { code: number; reason: string }) => void;
  /** History no longer covers the gap: reload a snapshot; messages continue after this position. */
  reset: (e: ResetEvent) => void;
  /** The server refused or ended the subscription. */
  error: (e: FerryError) => void;
}

/** A session present on a channel (when the server keeps presence on it): the `presence` entry. */
export interface PresenceMember {
  session: string;
  /** The identity, when the session has one. */
  user?: string;
}

export interface SubscribeOptions {
  /** Resume after this position instead of starting from now. */
  since?: Position;
}

/** Anything JSON.stringify accepts, or bytes (sent as base64, delivered as Uint8Array). */
export type Payload = unknown;

/** Remembers the transport that last proved itself for a base URL (the `memory` entry). */
export interface TransportMemory {
  get(base: string): TransportName | null;
  set(base: string, transport: TransportName): void;
}

export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

export interface OnlineTarget {
  addEventListener(type: 'online', listener: () => void): void;
  removeEventListener(type: 'online', listener: () => void): void;
}

/** What the client uses of a WebSocket (the browser's, or the `ws` package's). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(): void;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** What the client uses of an EventSource (the browser's, or the `eventsource` package's). */
export interface EventSourceLike {
  close(): void;
}
export type EventSourceConstructor = new (url: string) => EventSourceLike;

export interface FetchInit {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  signal?: AbortSignal;
}
export interface FetchResponse {
  readonly status: number;
  readonly ok: boolean;
  json(): Promise<unknown>;
}
export type FetchLike = (url: string, init: FetchInit) => Promise<FetchResponse>;

export interface Backoff {
  /** ms; the first window. */
  min?: number;
  /** ms; the largest window. */
  max?: number;
}

export interface BufferingOptions {
  /** ms added to two heartbeat intervals before a silent stream counts as held. Default 2000. */
  slack?: number;
  /** Consecutive pings looked at for a clump. Default 3. */
  pings?: number;
  /** Pings that arrive within this share of the time the server took to send them are a clump. Default 0.25. */
  ratio?: number;
}

export interface FerryOptions {
  /** Transports to use, in order of preference. Default all three, WebSocket first. */
  transports?: TransportName[];
  /** Sent as Authorization: Bearer (and as ?token= on WebSocket and SSE, which take no headers). */
  token?: string | null | (() => string | null | Promise<string | null>);
  /** ms a new transport has to deliver its hello frame. Default 3000. */
  proofTimeout?: number;
  /** ms before negotiate or POST /send counts as failed. Default 15000. */
  requestTimeout?: number;
  /** Full-jitter backoff between connection rounds. Default { min: 250, max: 15000 }. */
  backoff?: Backoff;
  /** Backoff of the background probe of the preferred transport. Default { min: 5000, max: 300000 }. */
  upgradeProbe?: Backoff;
  /** Unacknowledged upstream frames kept at most. Default 1000; keep it under the server's dedupe window (1024). */
  maxQueue?: number;
  /**
   * ms for an upstream frame to be acknowledged. Default 30000. Keep it under the server's
   * DedupeTTL (cmd/ferry: twice --session-ttl, 120 s by default): a frame is never resent later.
   */
  sendTimeout?: number;
  /**
   * Where the transport that worked is remembered, so that the next client of this origin
   * starts there: rememberTransport() of the `memory` entry. Default none.
   */
  transportMemory?: TransportMemory;
  /** The buffering detector, or false to turn it off. */
  buffering?: false | BufferingOptions;
  /** ms a long-poll asks the server to hold at most (&hold=). Default: the server's pollHoldMs. */
  pollHold?: number;
  /** true logs to console.debug; a function gets the same arguments. */
  debug?: boolean | ((...args: unknown[]) => void);
  /** Connect on construction. Default true; otherwise call connect(). */
  autoConnect?: boolean;
  /** Platform constructors; default the globals. A missing one removes its transport. */
  WebSocket?: WebSocketConstructor | null;
  EventSource?: EventSourceConstructor | null;
  fetch?: FetchLike | null;
  /** Fires 'online' to retry at once. Default the global window. */
  online?: OnlineTarget | null;
  /** Clock and randomness, for tests. */
  setTimeout?(fn: () => void, ms: number): unknown;
  clearTimeout?(id: unknown): void;
  now?(): number;
  random?(): number;
}

export declare class Subscription {
  readonly channel: string;
  /** The position of the last message (or sub/reset), or null before the first. */
  readonly position: Position | null;
  readonly state: 'subscribing' | 'subscribed' | 'unsubscribed';
  on<E extends keyof SubscriptionEvents>(event: E, fn: SubscriptionEvents[E]): this;
  off<E extends keyof SubscriptionEvents>(event?: E, fn?: SubscriptionEvents[E]): this;
  unsubscribe(): void;
}

export declare class Ferry {
  /** @param url the server's base, for example 'https://example.com/ferry' or '/ferry'. */
  constructor(url: string, options?: FerryOptions);
  readonly state: State;
  readonly transport: TransportName | null;
  /** The session id, once negotiated. */
  readonly sid: string | null;
  on<E extends keyof FerryEvents>(event: E, fn: FerryEvents[E]): this;
  off<E extends keyof FerryEvents>(event?: E, fn?: FerryEvents[E]): this;
  connect(): void;
  close(): void;
  subscribe<T = unknown>(
    channel: string,
    onMessage?: (data: T, meta: MessageMeta) => void,
    options?: SubscribeOptions,
  ): Subscription;
  subscription(channel: string): Subscription | undefined;
  /**
   * Publishes to a channel, exactly once (even across a 4005: see README); resolves with the
   * message's position, also when the ack answers a resent duplicate. Null only for a
   * duplicate the server no longer remembers (beyond its window of 1024 frames).
   */
  publish(channel: string, data: Payload): Promise<Position | null>;
  /** Sends to the server's upstream handler, exactly once; resolves once acknowledged. */
  send(data: Payload): Promise<void>;
}
