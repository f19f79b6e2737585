// The interface every transport implements (internal: the client picks them by name).
import type { TransportName, FetchLike } from '../index.js';

// The platform objects as the transports use them (the public options ask for less, so that
// any WebSocket or EventSource implementation fits).
export interface PlatformStream {
  onmessage: ((e: { data: unknown }) => void) | null;
  onerror: ((e: unknown) => void) | null;
  onclose?: ((e: { code: number; reason: string }) => void) | null;
  close(): void;
}
export interface PlatformWebSocket extends PlatformStream {
  readonly readyState: number;
  send(data: string): void;
}
export type PlatformEventSource = PlatformStream;

/** A server frame (PROTOCOL.md §3): a type `t` and its fields. */
export interface Frame {
  t: string;
  [field: string]: unknown;
}

/** One attachment of the session over one transport. */
export interface Transport {
  /** Upstream goes by POST /send, not over the attachment itself. */
  readonly http_?: true;
  open_(): void;
  /** Closes without calling onClose_; later events of the connection are dropped. */
  close_(): void;
  /** WebSocket: writes the frames, acks come back as frames. HTTP: resolves with the acks. */
  send_(frames: Frame[]): void | Promise<Frame[]>;
}

export interface TransportOptions {
  base_: string;
  session_: string;
  token_: string | null;
  /** The hold to ask for (&hold=), if the app set one. */
  hold_: number | undefined;
  /** The hold the server will use. */
  holdMs_: number;
  timeout_: number;
  WebSocket: new (url: string) => PlatformWebSocket;
  EventSource: new (url: string) => PlatformEventSource;
  fetch: FetchLike;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(id: unknown): void;
  /** The cursor of this attachment, with the positions as they are now. */
  cursor_(): string;
  /** The attachment's sequence number (att): the server never lets a lower one take over. */
  att_: number;
  /** The transport this attachment replaces and why, for the server's metrics. */
  from_: string | null;
  reason_: string | null;
  /** Delay before retry `attempt` (from 0) of a failed request. */
  retry_(attempt: number): number;
  /** Whether a newer attachment of the client is on its way (a long-poll must not poll again). */
  replaced_(): boolean;
  onFrame_(frame: Frame): void;
  /** The attachment ended: a close code (§7, or the platform's) and a short reason. */
  onClose_(code: number, reason: string): void;
}

export type TransportFactory = (o: TransportOptions) => Transport;

export declare const transports: {
  readonly [name in TransportName]: {
    create_: TransportFactory;
    needs_: 'WebSocket' | 'EventSource' | 'fetch';
    live_?: true;
    polled_?: true;
  };
};
