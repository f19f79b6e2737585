// Package bridge connects sessions to the world: channels with their fan-out to the
// sessions of this node (Hub), history, the API through which backends publish and read,
// and the mounting of everything on net/http and echo. It is the public face of Ferry's
// server: Server, Config, Publish, Mount.
//
// What the nodes of a cluster share lives behind the Broker interface, in packages of
// its own: bridge/broker (the contract), bridge/memory (the default, in this process) and
// bridge/redis (many nodes on one Redis). Presence is bridge/presence, with its Redis
// store in bridge/redis. The bridge imports bridge/memory but never bridge/redis, so a
// program on the in-memory broker links no Redis client.
package bridge

import (
	"cmp"
	"context"

	"github.com/ferryrt/ferry/bridge/broker"
	"github.com/ferryrt/ferry/bridge/presence"
)

// Broker is what the nodes of a cluster share (broker.Broker): the bridge's own
// memory.Broker by default, or redis.Broker for many nodes.
type Broker = broker.Broker

// HistoryConfig bounds the history of every channel (Config.History).
type HistoryConfig = broker.HistoryConfig

// Presence keeps who is on a channel (Config.Presence): presence.Memory on one node,
// redis.Presence on many.
type Presence = presence.Store

// WithIdempotencyKey returns a context that makes Server.Publish idempotent under key;
// see broker.WithIdempotencyKey.
func WithIdempotencyKey(ctx context.Context, key string) context.Context {
	return broker.WithIdempotencyKey(ctx, key)
}

// ErrIdempotencyConflict is returned (wrapped; match it with errors.Is) by a publish
// whose idempotency key was used within the window for the same channel with another
// payload; see broker.ErrIdempotencyConflict.
var ErrIdempotencyConflict = broker.ErrIdempotencyConflict

// orDefault returns v, or d if v is the zero value.
func orDefault[T comparable](v, d T) T { return cmp.Or(v, d) }
