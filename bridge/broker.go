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

func orDefault[T comparable](v, d T) T { return cmp.Or(v, d) }
