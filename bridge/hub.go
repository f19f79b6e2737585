package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ferryrt/ferry/session"
)

// Hub fans messages out to the attachments of this node and keeps the broker subscribed
// to exactly the channels they need. It implements session.Source. It is safe for
// concurrent use.
//
// The broker's subscriptions are brought in line per channel: no lock is held across a
// broker round trip, so a channel whose SUBSCRIBE is slow (a paused Redis) holds up the
// attachments that wait for that channel only, never the delivery or the attachments of
// channels this node holds already.
type Hub struct {
	broker  Broker
	log     *slog.Logger
	timeout time.Duration // bounds one broker (un)subscribe

	// mu guards channels and the sync state of each; it is never held across a call to
	// the broker.
	mu       sync.RWMutex
	channels map[string]*hubChannel
}

// hubChannel is a channel with local subscribers, or one whose broker subscription is
// still being undone. It stays in Hub.channels until both are over, so that every
// broker call for one name goes through the one sync pass of one hubChannel: a
// subscribe and an unsubscribe racing each other can't leave the broker wrong.
type hubChannel struct {
	name string

	mu   sync.RWMutex // subs, for the fan-out
	subs map[session.Deliverer]struct{}

	// Under Hub.mu.
	n         int           // len(subs)
	told      bool          // the broker was asked to subscribe, and not to unsubscribe since
	confirmed bool          // ... and confirmed it: a message published now reaches this node
	syncing   chan struct{} // non-nil while a sync pass runs; closed when it ends
}

// NewHub returns a Hub over broker. Start begins delivery.
func NewHub(broker Broker, log *slog.Logger) *Hub {
	return &Hub{broker: broker, log: log, timeout: session.DefaultStoreTimeout, channels: make(map[string]*hubChannel)}
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

// Subscribe implements session.Source. d receives the channel's messages at once; the
// call returns when the broker has confirmed the channel (at once when it had already),
// or with an error when ctx ends first or the broker failed. It waits on this channel
// alone.
func (h *Hub) Subscribe(ctx context.Context, channel string, d session.Deliverer) (func(), error) {
	h.mu.Lock()
	ch := h.channels[channel]
	if ch == nil {
		ch = &hubChannel{name: channel, subs: make(map[session.Deliverer]struct{})}
		h.channels[channel] = ch
	}
	ch.mu.Lock()
	if _, dup := ch.subs[d]; !dup {
		ch.subs[d] = struct{}{}
		ch.n++
	}
	ch.mu.Unlock()
	var wait chan struct{}
	if !ch.confirmed {
		wait = h.syncLocked(ch)
	}
	h.mu.Unlock()
	var once sync.Once
	unsub := func() { once.Do(func() { h.unsubscribe(ch, d) }) }
	if wait == nil {
		return unsub, nil
	}
	select {
	case <-wait:
	case <-ctx.Done():
		return unsub, fmt.Errorf("bridge: subscription to %s not confirmed: %w", channel, ctx.Err())
	}
	h.mu.RLock()
	ok := ch.confirmed
	h.mu.RUnlock()
	if !ok {
		return unsub, fmt.Errorf("bridge: subscription to %s failed", channel)
	}
	return unsub, nil
}

// unsubscribe removes d from ch. It never waits: the broker learns it in the background.
func (h *Hub) unsubscribe(ch *hubChannel, d session.Deliverer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch.mu.Lock()
	_, ok := ch.subs[d]
	delete(ch.subs, d)
	ch.mu.Unlock()
	if !ok {
		return
	}
	ch.n--
	if ch.n > 0 {
		return
	}
	switch {
	case ch.told:
		h.syncLocked(ch)
	case ch.syncing == nil && h.channels[ch.name] == ch:
		delete(h.channels, ch.name)
	}
}

// syncLocked starts a sync pass of ch unless one runs, and returns the channel that is
// closed when the pass ends.
func (h *Hub) syncLocked(ch *hubChannel) chan struct{} {
	if ch.syncing == nil {
		ch.syncing = make(chan struct{})
		go h.sync(ch)
	}
	return ch.syncing
}

// sync brings the broker in line with ch's subscribers, one call at a time, re-reading
// what is wanted after each call (subscribers come and go meanwhile), until the broker
// is as wanted or a call failed. A failure is logged; the waiting subscribers see it
// (their attachments close with a reconnect code), and the next subscriber tries again.
// A channel nobody needs any more leaves the map here.
func (h *Hub) sync(ch *hubChannel) {
	failed := false
	for {
		h.mu.Lock()
		want := ch.n > 0
		subscribe, unsubscribe := want && !ch.confirmed, !want && ch.told
		if failed || (!subscribe && !unsubscribe) {
			close(ch.syncing)
			ch.syncing = nil
			if ch.n == 0 && !ch.told && h.channels[ch.name] == ch {
				delete(h.channels, ch.name)
			}
			h.mu.Unlock()
			return
		}
		if subscribe {
			// From now on leaving must unsubscribe, whatever this call's outcome.
			ch.told = true
		}
		h.mu.Unlock()

		ctx, cancel := context.WithTimeout(context.Background(), h.timeout)
		op, f := "subscribe", h.broker.Subscribe
		if unsubscribe {
			op, f = "unsubscribe", h.broker.Unsubscribe
		}
		err := f(ctx, ch.name)
		cancel()

		h.mu.Lock()
		switch {
		case err != nil:
			h.log.Warn("broker "+op+" failed", "channel", ch.name, "err", err)
			ch.confirmed, failed = false, true
		case subscribe:
			ch.confirmed = true
		default:
			ch.told, ch.confirmed = false, false
		}
		h.mu.Unlock()
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
	n := 0
	for _, ch := range h.channels {
		if ch.n > 0 {
			n++
		}
	}
	return n
}
