// Package bridge connects sessions to the world: channels with their history, fan-out to
// the sessions of this node, the broker shared by all nodes (in memory or Redis), the API
// through which backends publish and receive, and the mounting of everything on net/http
// and echo.
package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/ferryrt/ferry/session"
)

// Broker is what the nodes of a cluster share: channel history and positions, fan-out
// between nodes, and the session store (liveness, upstream dedupe, attachment notices).
// MemoryBroker serves one node; a Redis broker serves many.
type Broker interface {
	session.Store

	// Publish appends a message (JSON data, or bin when data is nil) to channel, assigning
	// its position atomically, and fans it out to every node subscribed to channel.
	Publish(ctx context.Context, channel string, data json.RawMessage, bin []byte) (*session.Message, error)
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

func (h HistoryConfig) withDefaults() HistoryConfig {
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

// ErrTooManySessions is returned when a node's session store is full (MemoryConfig.
// MaxSessions). It is a close reason with code 4000, so a negotiation refused with it is
// answered 503 {"code":4000}: the client tries again, through the load balancer on
// another node. Match it with errors.Is.
var ErrTooManySessions error = &session.Error{Code: session.CodeReconnect, Reason: "too many sessions on this node: try another node"}
