// Package broker holds the contract between the bridge and the brokers it runs on: the
// Broker interface, the bounds of channel history, the errors every broker returns, the
// idempotency keys of publishes, and the channel epochs. The in-memory broker
// (bridge/memory) and the Redis broker (bridge/redis) implement it; the bridge uses it.
// It imports no broker, so that a program links only the broker it uses.
//
// IDs (channel epochs, the retry ids of publishes) come from github.com/google/uuid.
package broker

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/ferryrt/ferry/session"
)

// Broker is what the nodes of a cluster share. It is two contracts in one value, kept
// apart by name so that each reads on its own: the ChannelLog (channel history and
// positions, fan-out between nodes) and the session.Store the session Manager runs on
// (liveness, upstream dedupe, attachment notices). Both live in one broker because both
// must be shared by the same nodes, through the same Redis; memory.Broker serves one
// node, redis.Broker many.
type Broker interface {
	ChannelLog
	session.Store
}

// Publisher publishes messages; every Broker is one.
type Publisher interface {
	// Publish appends a message (JSON data, or bin when data is nil) to channel, assigning
	// its position atomically, and fans it out to every node subscribed to channel.
	Publish(ctx context.Context, channel string, data json.RawMessage, bin []byte) (*session.Message, error)
}

// ChannelLog is the channel half of a Broker: an ordered, bounded log per channel, and
// the delivery of its new messages to the nodes subscribed to it.
type ChannelLog interface {
	Publisher
	// Since returns up to limit messages after pos and the latest position; see
	// session.Source.
	Since(ctx context.Context, channel string, pos session.Position, limit int) ([]*session.Message, session.Position, bool, error)
	// Subscribe makes this node receive channel's messages; Unsubscribe stops it.
	Subscribe(ctx context.Context, channel string) error
	Unsubscribe(ctx context.Context, channel string) error
	// Start begins delivery: deliver receives every message of a subscribed channel, in
	// offset order per channel, and supersede every attachment notice of another node.
	Start(deliver func(*session.Message), supersede func(sid, attachID string)) error
	// Ready reports whether the broker can serve: reachable and subscribed.
	Ready(ctx context.Context) error
	Close() error
}

// HistoryConfig bounds the history of every channel.
type HistoryConfig struct {
	Size int           // messages kept per channel; default 1000
	TTL  time.Duration // age after which messages leave history; default 5 minutes
}

// Defaults for HistoryConfig.
const (
	DefaultHistorySize = 1000
	DefaultHistoryTTL  = 5 * time.Minute
)

// WithDefaults returns h with its zero fields set to their defaults.
func (h HistoryConfig) WithDefaults() HistoryConfig {
	if h.Size <= 0 {
		h.Size = DefaultHistorySize
	}
	if h.TTL <= 0 {
		h.TTL = DefaultHistoryTTL
	}
	return h
}

// ErrBrokerClosed is returned by a broker after Close.
var ErrBrokerClosed = errors.New("bridge: broker closed")

// ErrTooManySessions is returned when a node's session store is full (memory.Config.
// MaxSessions). It is a close reason with code 4000, so a negotiation refused with it is
// answered 503 {"code":4000}: the client tries again, through the load balancer on
// another node. Match it with errors.Is.
var ErrTooManySessions error = &session.Error{Code: session.CodeReconnect, Reason: "too many sessions on this node: try another node"}

// Upstream is a message a client sent to the server. OnMessage sees each one once per
// (Client, Seq) when Client is set, per (Session, Seq) otherwise: a client that
// negotiates with a client identity keeps its sequence across sessions. It is here, not
// in the bridge, so that a broker can carry upstream messages (redis.UpstreamToStream)
// without importing the bridge.
type Upstream struct {
	Session string
	User    string
	// Client is the client identity the session was negotiated with ("" for none).
	Client string
	Seq    uint64
	Data   json.RawMessage // JSON payload; nil when Binary is set
	Binary []byte
}
