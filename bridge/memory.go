package bridge

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"sync"
	"time"

	"github.com/ferryrt/ferry/session"
)

// MemoryConfig configures a MemoryBroker. The zero value is valid.
type MemoryConfig struct {
	History HistoryConfig
	// MaxSessions bounds live sessions (negotiated and not expired); default 1,000,000.
	// Negotiation fails with ErrTooManySessions beyond it.
	MaxSessions int
	// DedupeWindow is the number of upstream sequence numbers remembered per session;
	// default session.DefaultDedupeWindow.
	DedupeWindow int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// MemoryBroker keeps everything in this process: the default for a single node. It is
// safe for concurrent use.
type MemoryBroker struct {
	cfg MemoryConfig

	mu       sync.Mutex
	channels map[string]*memChannel
	deliver  func(*session.Message)
	closed   bool

	smu       sync.Mutex
	sessions  map[string]*memSession
	lastSweep time.Time
}

type memChannel struct {
	mu    sync.Mutex
	epoch string
	top   uint64
	ring  []*session.Message // oldest first; ring[i].Pos.Offset == top-len(ring)+1+i
}

type memSession struct {
	expires time.Time
	window  *session.Window
}

// NewMemoryBroker returns an in-memory broker.
func NewMemoryBroker(cfg MemoryConfig) *MemoryBroker {
	cfg.History = cfg.History.withDefaults()
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 1_000_000
	}
	if cfg.DedupeWindow <= 0 {
		cfg.DedupeWindow = session.DefaultDedupeWindow
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &MemoryBroker{cfg: cfg, channels: make(map[string]*memChannel), sessions: make(map[string]*memSession)}
}

// newEpoch returns 8 random characters from [a-z0-9].
func newEpoch() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	var b [8]byte
	rand.Read(b[:])
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b[:])
}

func (b *MemoryBroker) channel(name string) *memChannel {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch := b.channels[name]
	if ch == nil {
		ch = &memChannel{epoch: newEpoch()}
		b.channels[name] = ch
	}
	return ch
}

// Start implements Broker.
func (b *MemoryBroker) Start(deliver func(*session.Message), _ func(sid, attachID string)) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.deliver = deliver
	return nil
}

// Publish implements Broker. Fan-out happens before Publish returns and under the
// channel's lock, so every subscriber sees a channel's messages in offset order.
func (b *MemoryBroker) Publish(_ context.Context, channel string, data json.RawMessage, bin []byte) (*session.Message, error) {
	b.mu.Lock()
	closed, deliver := b.closed, b.deliver
	b.mu.Unlock()
	if closed {
		return nil, ErrBrokerClosed
	}
	ch := b.channel(channel)
	now := b.cfg.Now()
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.top++
	m := &session.Message{Channel: channel, Pos: session.Position{Epoch: ch.epoch, Offset: ch.top}, Data: data, Bin: bin, Time: now.UnixMilli()}
	ch.ring = append(ch.ring, m)
	ch.trim(b.cfg.History, now)
	if deliver != nil {
		deliver(m)
	}
	return m, nil
}

// trim drops messages beyond the count bound or older than the age bound.
func (ch *memChannel) trim(h HistoryConfig, now time.Time) {
	drop := max(0, len(ch.ring)-h.Size)
	cutoff := now.Add(-h.TTL).UnixMilli()
	for drop < len(ch.ring) && ch.ring[drop].Time < cutoff {
		drop++
	}
	if drop > 0 {
		clear(ch.ring[:drop])
		ch.ring = ch.ring[drop:]
		if cap(ch.ring) > 2*h.Size {
			ch.ring = append([]*session.Message(nil), ch.ring...)
		}
	}
}

// Since implements Broker.
func (b *MemoryBroker) Since(_ context.Context, channel string, pos session.Position, limit int) ([]*session.Message, session.Position, bool, error) {
	ch := b.channel(channel)
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.trim(b.cfg.History, b.cfg.Now())
	top := session.Position{Epoch: ch.epoch, Offset: ch.top}
	if pos.IsZero() {
		return nil, top, true, nil
	}
	if pos.Epoch != ch.epoch || pos.Offset > ch.top {
		return nil, top, false, nil
	}
	oldest := ch.top - uint64(len(ch.ring)) + 1 // offset of ring[0]
	if pos.Offset+1 < oldest {
		return nil, top, false, nil
	}
	start := int(pos.Offset + 1 - oldest)
	end := min(len(ch.ring), start+limit)
	msgs := append([]*session.Message(nil), ch.ring[start:end]...)
	return msgs, top, true, nil
}

// Subscribe implements Broker: one node hears everything, so there is nothing to do.
func (b *MemoryBroker) Subscribe(context.Context, string) error { return nil }

// Unsubscribe implements Broker.
func (b *MemoryBroker) Unsubscribe(context.Context, string) error { return nil }

// Ready implements Broker.
func (b *MemoryBroker) Ready(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrBrokerClosed
	}
	return nil
}

// Close implements Broker.
func (b *MemoryBroker) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	return nil
}

// CreateSession implements session.Store.
func (b *MemoryBroker) CreateSession(_ context.Context, sid string, ttl time.Duration) error {
	now := b.cfg.Now()
	b.smu.Lock()
	defer b.smu.Unlock()
	if len(b.sessions) >= b.cfg.MaxSessions || now.Sub(b.lastSweep) > time.Second {
		b.sweepLocked(now)
	}
	if len(b.sessions) >= b.cfg.MaxSessions {
		return ErrTooManySessions
	}
	b.sessions[sid] = &memSession{expires: now.Add(ttl)}
	return nil
}

func (b *MemoryBroker) sweepLocked(now time.Time) {
	b.lastSweep = now
	for sid, s := range b.sessions {
		if now.After(s.expires) {
			delete(b.sessions, sid)
		}
	}
}

// Sessions returns the number of live sessions.
func (b *MemoryBroker) Sessions() int {
	b.smu.Lock()
	defer b.smu.Unlock()
	b.sweepLocked(b.cfg.Now())
	return len(b.sessions)
}

func (b *MemoryBroker) live(sid string, now time.Time) *memSession {
	s := b.sessions[sid]
	if s == nil {
		return nil
	}
	if now.After(s.expires) {
		delete(b.sessions, sid)
		return nil
	}
	return s
}

// TouchSession implements session.Store.
func (b *MemoryBroker) TouchSession(_ context.Context, sid string, ttl time.Duration) (bool, error) {
	now := b.cfg.Now()
	b.smu.Lock()
	defer b.smu.Unlock()
	s := b.live(sid, now)
	if s == nil {
		return false, nil
	}
	s.expires = now.Add(ttl)
	return true, nil
}

// MarkSeq implements session.Store.
func (b *MemoryBroker) MarkSeq(_ context.Context, sid string, seq uint64) (bool, error) {
	b.smu.Lock()
	defer b.smu.Unlock()
	s := b.live(sid, b.cfg.Now())
	if s == nil {
		return false, session.ErrSession
	}
	if s.window == nil {
		s.window = session.NewWindow(b.cfg.DedupeWindow)
	}
	return s.window.Mark(seq), nil
}

// Announce implements session.Store: on one node the Manager has already superseded.
func (b *MemoryBroker) Announce(context.Context, string, string) error { return nil }
