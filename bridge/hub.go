package bridge

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/ferryrt/ferry/session"
)

// Hub fans messages out to the attachments of this node and keeps the broker subscribed
// to exactly the channels they need. It implements session.Source. It is safe for
// concurrent use.
type Hub struct {
	broker Broker
	log    *slog.Logger

	mu       sync.RWMutex
	channels map[string]*hubChannel

	// syncMu serializes broker subscription changes; brokerSubs is what the broker has
	// been told, which syncChannel brings in line with channels.
	syncMu     sync.Mutex
	brokerSubs map[string]bool
}

type hubChannel struct {
	mu   sync.RWMutex
	subs map[session.Deliverer]struct{}
}

// NewHub returns a Hub over broker. Start begins delivery.
func NewHub(broker Broker, log *slog.Logger) *Hub {
	return &Hub{broker: broker, log: log, channels: make(map[string]*hubChannel), brokerSubs: make(map[string]bool)}
}

// Start starts the broker's delivery into the hub; supersede receives the attachment
// notices of other nodes.
func (h *Hub) Start(supersede func(sid, attachID string)) error {
	return h.broker.Start(h.fanout, supersede)
}

// fanout passes m to every local subscriber of its channel. Deliver never blocks, so one
// slow session can't hold up the others (it is disconnected instead).
func (h *Hub) fanout(m *session.Message) {
	h.mu.RLock()
	ch := h.channels[m.Channel]
	h.mu.RUnlock()
	if ch == nil {
		return
	}
	ch.mu.RLock()
	defer ch.mu.RUnlock()
	for d := range ch.subs {
		d.Deliver(m)
	}
}

// Subscribe implements session.Source.
func (h *Hub) Subscribe(channel string, d session.Deliverer) func() {
	h.mu.Lock()
	ch := h.channels[channel]
	first := ch == nil
	if first {
		ch = &hubChannel{subs: make(map[session.Deliverer]struct{})}
		h.channels[channel] = ch
	}
	ch.mu.Lock()
	ch.subs[d] = struct{}{}
	ch.mu.Unlock()
	h.mu.Unlock()
	if first {
		h.syncChannel(channel)
	}
	var once sync.Once
	return func() { once.Do(func() { h.unsubscribe(channel, d) }) }
}

func (h *Hub) unsubscribe(channel string, d session.Deliverer) {
	h.mu.Lock()
	ch := h.channels[channel]
	if ch == nil {
		h.mu.Unlock()
		return
	}
	ch.mu.Lock()
	delete(ch.subs, d)
	last := len(ch.subs) == 0
	ch.mu.Unlock()
	if last {
		delete(h.channels, channel)
	}
	h.mu.Unlock()
	if last {
		h.syncChannel(channel)
	}
}

// syncChannel tells the broker whether this node needs channel, according to the state at
// the time of the call, so that a subscribe and an unsubscribe racing each other can't
// leave the broker in the wrong state. A failure is logged, not returned: the broker
// resubscribes when it recovers, and an attachment's gap detection reads what it missed
// from history.
func (h *Hub) syncChannel(channel string) {
	h.syncMu.Lock()
	defer h.syncMu.Unlock()
	h.mu.RLock()
	want := h.channels[channel] != nil
	h.mu.RUnlock()
	if want == h.brokerSubs[channel] {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	op, f := "subscribe", h.broker.Subscribe
	if !want {
		op, f = "unsubscribe", h.broker.Unsubscribe
	}
	if err := f(ctx, channel); err != nil {
		h.log.Warn("broker "+op+" failed", "channel", channel, "err", err)
		return
	}
	if want {
		h.brokerSubs[channel] = true
	} else {
		delete(h.brokerSubs, channel)
	}
}

// Since implements session.Source.
func (h *Hub) Since(ctx context.Context, channel string, pos session.Position, limit int) ([]*session.Message, session.Position, bool, error) {
	return h.broker.Since(ctx, channel, pos, limit)
}

// Channels returns the number of channels with local subscribers.
func (h *Hub) Channels() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.channels)
}
