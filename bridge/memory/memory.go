// Package memory is the in-memory broker: channels, history, sessions and dedupe windows
// kept in this process, for a single node. It is the bridge's default broker. Its state
// can be saved at shutdown and loaded at start (Save, Load), so that a restarted node's
// clients resume.
package memory

import (
	"cmp"
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/json"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/ferryrt/ferry/bridge/broker"
	"github.com/ferryrt/ferry/session"
)

// Config configures a Broker. The zero value is valid.
type Config struct {
	History broker.HistoryConfig
	// MaxSessions bounds live sessions (negotiated and not expired); default
	// DefaultMaxSessions. Beyond it negotiations fail with broker.ErrTooManySessions, which
	// clients get as 503 with code 4000 (try another node); live sessions are unaffected.
	MaxSessions int
	// DedupeWindow is the number of upstream sequence numbers remembered per dedupe key
	// (a client identity, or a session without one; see session.DedupeKey); default
	// session.DefaultDedupeWindow.
	DedupeWindow int
	// MaxDedupeKeys bounds the dedupe windows kept (each about 200 bytes, plus the
	// recorded positions and errors of its frames); default DefaultMaxDedupeKeys. A window
	// lasts session.Config.DedupeTTL after its latest frame; beyond the bound the window
	// whose latest frame is the oldest is forgotten first, and counted (DedupeEvictions):
	// a frame of it resent afterwards would be processed again.
	MaxDedupeKeys int
	// SweepInterval is how often every channel's history is trimmed by age, channels with
	// neither history nor subscribers are dropped, and expired sessions are forgotten;
	// default History.TTL/4, from 1 s to 1 min. Reads trim a channel themselves, so the
	// sweep bounds memory, not what clients see.
	SweepInterval time.Duration
	// Tombstones bounds how many dropped channels keep their position (epoch and latest
	// offset, about 100 bytes plus the name), so that a channel used again continues where
	// it stopped and its clients resume; default DefaultTombstones, negative keeps none.
	// Beyond it the oldest are forgotten, and a forgotten channel used again starts a new
	// epoch: its clients get a reset, never a reused position.
	Tombstones int
	// IdempotencyTTL is how long an idempotency key (broker.WithIdempotencyKey, the
	// Idempotency-Key header of POST /api/publish) is remembered after its publish;
	// default broker.DefaultIdempotencyTTL.
	IdempotencyTTL time.Duration
	// MaxIdempotencyKeys bounds the idempotency keys remembered (each about 200 bytes plus
	// the key); default DefaultMaxIdempotencyKeys. Beyond it the oldest key is forgotten
	// first, and counted (IdempotencyEvictions): a publish retried with it afterwards
	// would publish again.
	MaxIdempotencyKeys int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Defaults of Config.
const (
	DefaultMaxSessions   = 1_000_000
	DefaultMaxDedupeKeys = 1_000_000
	DefaultTombstones    = 100_000
	// DefaultMaxIdempotencyKeys bounds the idempotency keys a Broker remembers.
	DefaultMaxIdempotencyKeys = 100_000
)

func (cfg Config) withDefaults() Config {
	cfg.History = cfg.History.WithDefaults()
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.DedupeWindow <= 0 {
		cfg.DedupeWindow = session.DefaultDedupeWindow
	}
	if cfg.MaxDedupeKeys <= 0 {
		cfg.MaxDedupeKeys = DefaultMaxDedupeKeys
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = min(max(cfg.History.TTL/4, time.Second), time.Minute)
	}
	cfg.Tombstones = max(cmp.Or(cfg.Tombstones, DefaultTombstones), 0)
	cfg.IdempotencyTTL = max(cmp.Or(cfg.IdempotencyTTL, broker.DefaultIdempotencyTTL), 0)
	cfg.MaxIdempotencyKeys = max(cmp.Or(cfg.MaxIdempotencyKeys, DefaultMaxIdempotencyKeys), 1)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return cfg
}

// Broker keeps everything in this process: the default for a single node. It is
// safe for concurrent use. Close stops its sweeper.
//
// A channel has state while it has history or subscribers: reading a channel that has
// none (history, a dashboard stream, a resume) creates nothing, and the sweeper drops a
// channel once its history has aged out and its last subscriber has gone. Positions stay
// honest across a drop: the channel's position is kept as a tombstone, and once that is
// forgotten the channel's next epoch differs from every earlier one (see freshEpochLocked).
type Broker struct {
	cfg Config

	mu       sync.Mutex
	channels map[string]*memChannel
	subs     map[string]int           // Subscribe calls not undone yet; such channels stay
	tombs    map[string]*list.Element // of *memTomb, in tombList
	tombList list.List                // oldest first
	gen      uuid.UUID                // seeds the epochs of channels without state
	deliver  func(*session.Message)
	closed   bool
	sweeper  *time.Timer

	sweepMu sync.Mutex // held by a sweep; Close takes it to wait for one under way

	smu       sync.Mutex
	sessions  map[string]*memSession
	lastSweep time.Time
	dedupe    map[string]*list.Element // of *memDedupe, in dedupeLRU
	dedupeLRU list.List                // least recently marked first
	evicted   uint64                   // dedupe windows forgotten for MaxDedupeKeys

	idem *broker.KeyTable // idempotency keys of publishes
}

type memChannel struct {
	mu    sync.Mutex
	epoch string
	top   uint64
	ring  []*session.Message // oldest first; ring[i].Pos.Offset == top-len(ring)+1+i
	// dropped is set, under mu, when the channel leaves the broker (a sweep, Load): a
	// Publish that found it before then must look the channel up again, or it would
	// assign a position that history and the tombstone know nothing of.
	dropped bool
}

// memTomb is the position of a dropped channel that had messages.
type memTomb struct {
	name  string
	epoch string
	top   uint64
}

type memSession struct {
	expires time.Time
}

// memDedupe is the dedupe window of one key (session.DedupeKey).
type memDedupe struct {
	key     string
	expires time.Time
	ledger  *session.Ledger
}

// New returns an in-memory broker and starts its sweeper.
func New(cfg Config) *Broker {
	b := &Broker{cfg: cfg.withDefaults(), channels: make(map[string]*memChannel), subs: make(map[string]int),
		tombs: make(map[string]*list.Element), sessions: make(map[string]*memSession),
		dedupe: make(map[string]*list.Element)}
	b.idem = broker.NewKeyTable(b.cfg.IdempotencyTTL, b.cfg.MaxIdempotencyKeys)
	b.gen = uuid.New()
	// A timer rather than a goroutine: a broker nobody closes (one handed to a Server,
	// which by contract leaves it open) costs a pending timer, not a parked goroutine.
	b.mu.Lock()
	b.sweeper = time.AfterFunc(b.cfg.SweepInterval, b.tick)
	b.mu.Unlock()
	return b
}

// freshEpochLocked returns the epoch channel name begins with when it has no state: a hash
// of the name under b.gen. So a read of a channel that does not exist yet names the epoch
// its first message will get, without storing anything, and a client starting from that
// position is not reset by the first message. b.gen changes whenever the broker forgets a
// position it may have handed out (an evicted tombstone, Load); a channel recreated after
// that gets an epoch it never had, so an old position can't name a new message. (A channel
// dropped before its first message needs neither: it never handed out an offset.)
func (b *Broker) freshEpochLocked(name string) string {
	h := sha256.New()
	h.Write(b.gen[:])
	h.Write([]byte(name))
	return broker.EpochFrom(h.Sum(nil))
}

// channelLocked returns name's channel, creating it from its tombstone or afresh.
func (b *Broker) channelLocked(name string) *memChannel {
	if ch := b.channels[name]; ch != nil {
		return ch
	}
	ch := &memChannel{}
	if e := b.tombs[name]; e != nil {
		t := b.tombList.Remove(e).(*memTomb)
		delete(b.tombs, name)
		ch.epoch, ch.top = t.epoch, t.top
	} else {
		ch.epoch = b.freshEpochLocked(name)
	}
	b.channels[name] = ch
	return ch
}

// absentLocked returns the position of a channel without state.
func (b *Broker) absentLocked(name string) session.Position {
	if e := b.tombs[name]; e != nil {
		t := e.Value.(*memTomb)
		return session.Position{Epoch: t.epoch, Offset: t.top}
	}
	return session.Position{Epoch: b.freshEpochLocked(name)}
}

// Start implements broker.Broker.
func (b *Broker) Start(deliver func(*session.Message), _ func(sid, attachID string)) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.deliver = deliver
	return nil
}

// Publish implements broker.Broker. Fan-out happens before Publish returns and under the
// channel's lock, so every subscriber sees a channel's messages in offset order. A
// publish with an idempotency key (broker.WithIdempotencyKey) already used for channel within
// IdempotencyTTL publishes nothing and returns the first publish's message.
func (b *Broker) Publish(ctx context.Context, channel string, data json.RawMessage, bin []byte) (*session.Message, error) {
	return b.idem.PublishOnce(ctx, b.cfg.Now(), channel, data, bin, func() (*session.Message, error) {
		return b.publish(channel, data, bin)
	})
}

// IdempotencyEvictions returns how many idempotency keys were forgotten before their
// IdempotencyTTL because MaxIdempotencyKeys was reached.
func (b *Broker) IdempotencyEvictions() uint64 {
	return b.idem.Evictions()
}

func (b *Broker) publish(channel string, data json.RawMessage, bin []byte) (*session.Message, error) {
	for {
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return nil, broker.ErrBrokerClosed
		}
		deliver := b.deliver
		ch := b.channelLocked(channel)
		b.mu.Unlock()
		if m, ok := b.appendTo(ch, channel, data, bin, deliver); ok {
			return m, nil
		}
		// A sweep dropped the channel, still empty, before it got the lock: look again.
	}
}

// appendTo assigns the next position of ch to a new message and fans it out; false if a
// sweep has dropped ch meanwhile.
func (b *Broker) appendTo(ch *memChannel, channel string, data json.RawMessage, bin []byte, deliver func(*session.Message)) (*session.Message, bool) {
	now := b.cfg.Now()
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.dropped {
		return nil, false
	}
	ch.top++
	m := &session.Message{Channel: channel, Pos: session.Position{Epoch: ch.epoch, Offset: ch.top}, Data: data, Bin: bin, Time: now.UnixMilli()}
	ch.ring = append(ch.ring, m)
	ch.trim(b.cfg.History, now)
	if deliver != nil {
		deliver(m)
	}
	return m, true
}

// trim drops messages beyond the count bound or older than the age bound.
func (ch *memChannel) trim(h broker.HistoryConfig, now time.Time) {
	drop := max(0, len(ch.ring)-h.Size)
	cutoff := now.Add(-h.TTL).UnixMilli()
	for drop < len(ch.ring) && ch.ring[drop].Time < cutoff {
		drop++
	}
	switch {
	case drop == 0:
	case drop == len(ch.ring):
		ch.ring = nil // let the backing array go
	default:
		clear(ch.ring[:drop])
		ch.ring = ch.ring[drop:]
		if cap(ch.ring) > 2*h.Size {
			ch.ring = append([]*session.Message(nil), ch.ring...)
		}
	}
}

// Since implements broker.Broker. A channel without state is read as empty at its tombstone's
// position or at offset 0 of the epoch it would begin with, and is not created.
func (b *Broker) Since(_ context.Context, channel string, pos session.Position, limit int) ([]*session.Message, session.Position, bool, error) {
	b.mu.Lock()
	ch := b.channels[channel]
	var absent session.Position
	if ch == nil {
		absent = b.absentLocked(channel)
	}
	b.mu.Unlock()
	if ch == nil {
		msgs, ok := since(nil, absent, pos, limit)
		return msgs, absent, ok, nil
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.trim(b.cfg.History, b.cfg.Now())
	top := session.Position{Epoch: ch.epoch, Offset: ch.top}
	msgs, ok := since(ch.ring, top, pos, limit)
	return msgs, top, ok, nil
}

// since returns up to limit messages of ring (the history of a channel at top) after pos,
// and whether the history covers pos.
func since(ring []*session.Message, top, pos session.Position, limit int) ([]*session.Message, bool) {
	if pos.IsZero() {
		return nil, true
	}
	if pos.Epoch != top.Epoch || pos.Offset > top.Offset {
		return nil, false
	}
	oldest := top.Offset - uint64(len(ring)) + 1 // offset of ring[0]
	if pos.Offset+1 < oldest {
		return nil, false
	}
	start := int(pos.Offset + 1 - oldest)
	end := min(len(ring), start+limit)
	return append([]*session.Message(nil), ring[start:end]...), true
}

// Subscribe implements broker.Broker. One node hears everything, so there is nothing to
// subscribe to; but a subscribed channel is kept (and created now), so that the epoch its
// subscribers start from can't change under them before its first message.
func (b *Broker) Subscribe(_ context.Context, channel string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.subs[channel]++
	b.channelLocked(channel)
	return nil
}

// Unsubscribe implements broker.Broker.
func (b *Broker) Unsubscribe(_ context.Context, channel string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n := b.subs[channel]; n > 1 {
		b.subs[channel] = n - 1
	} else {
		delete(b.subs, channel)
	}
	return nil
}

// Channels returns the number of channels the broker holds state for: those with
// history or subscribers, and those not swept yet.
func (b *Broker) Channels() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.channels)
}

// Ready implements broker.Broker.
func (b *Broker) Ready(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return broker.ErrBrokerClosed
	}
	return nil
}

// Close implements broker.Broker: publishing stops, and so does the sweeper (Close waits for a
// sweep under way). History and sessions can still be read and saved.
func (b *Broker) Close() error {
	b.mu.Lock()
	b.closed = true
	b.sweeper.Stop()
	b.mu.Unlock()
	b.sweepMu.Lock() // wait for a sweep the timer had already started
	b.sweepMu.Unlock()
	return nil
}
