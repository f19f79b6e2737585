package bridge

import (
	"container/list"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"sync"
	"time"

	"github.com/ferryrt/ferry/session"
)

// MemoryConfig configures a MemoryBroker. The zero value is valid.
type MemoryConfig struct {
	History HistoryConfig
	// MaxSessions bounds live sessions (negotiated and not expired); default
	// DefaultMaxSessions. Beyond it negotiations fail with ErrTooManySessions, which
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
	// IdempotencyTTL is how long an idempotency key (WithIdempotencyKey, the
	// Idempotency-Key header of POST /api/publish) is remembered after its publish;
	// default DefaultIdempotencyTTL.
	IdempotencyTTL time.Duration
	// MaxIdempotencyKeys bounds the idempotency keys remembered (each about 200 bytes plus
	// the key); default DefaultMaxIdempotencyKeys. Beyond it the oldest key is forgotten
	// first, and counted (IdempotencyEvictions): a publish retried with it afterwards
	// would publish again.
	MaxIdempotencyKeys int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Defaults of MemoryConfig.
const (
	DefaultMaxSessions   = 1_000_000
	DefaultMaxDedupeKeys = 1_000_000
	DefaultTombstones    = 100_000
)

func (cfg MemoryConfig) withDefaults() MemoryConfig {
	cfg.History = cfg.History.withDefaults()
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
	cfg.Tombstones = max(orDefault(cfg.Tombstones, DefaultTombstones), 0)
	cfg.IdempotencyTTL = max(orDefault(cfg.IdempotencyTTL, DefaultIdempotencyTTL), 0)
	cfg.MaxIdempotencyKeys = max(orDefault(cfg.MaxIdempotencyKeys, DefaultMaxIdempotencyKeys), 1)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return cfg
}

// MemoryBroker keeps everything in this process: the default for a single node. It is
// safe for concurrent use. Close stops its sweeper.
//
// A channel has state while it has history or subscribers: reading a channel that has
// none (history, a dashboard stream, a resume) creates nothing, and the sweeper drops a
// channel once its history has aged out and its last subscriber has gone. Positions stay
// honest across a drop: the channel's position is kept as a tombstone, and once that is
// forgotten the channel's next epoch differs from every earlier one (see freshEpochLocked).
type MemoryBroker struct {
	cfg MemoryConfig

	mu       sync.Mutex
	channels map[string]*memChannel
	subs     map[string]int           // Subscribe calls not undone yet; such channels stay
	tombs    map[string]*list.Element // of *memTomb, in tombList
	tombList list.List                // oldest first
	gen      [16]byte                 // seeds the epochs of channels without state
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

	idem idemTable // idempotency keys of publishes
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

// NewMemoryBroker returns an in-memory broker and starts its sweeper.
func NewMemoryBroker(cfg MemoryConfig) *MemoryBroker {
	b := &MemoryBroker{cfg: cfg.withDefaults(), channels: make(map[string]*memChannel), subs: make(map[string]int),
		tombs: make(map[string]*list.Element), sessions: make(map[string]*memSession),
		dedupe: make(map[string]*list.Element)}
	b.idem.ttl, b.idem.max = b.cfg.IdempotencyTTL, b.cfg.MaxIdempotencyKeys
	rand.Read(b.gen[:])
	// A timer rather than a goroutine: a broker nobody closes (one handed to a Server,
	// which by contract leaves it open) costs a pending timer, not a parked goroutine.
	b.mu.Lock()
	b.sweeper = time.AfterFunc(b.cfg.SweepInterval, b.tick)
	b.mu.Unlock()
	return b
}

const epochAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// epochFrom maps 8 bytes to an epoch of 8 characters from [a-z0-9].
func epochFrom(b []byte) string {
	var e [8]byte
	for i := range e {
		e[i] = epochAlphabet[int(b[i])%len(epochAlphabet)]
	}
	return string(e[:])
}

// newEpoch returns 8 random characters from [a-z0-9].
func newEpoch() string {
	var b [8]byte
	rand.Read(b[:])
	return epochFrom(b[:])
}

// freshEpochLocked returns the epoch channel name begins with when it has no state: a hash
// of the name under b.gen. So a read of a channel that does not exist yet names the epoch
// its first message will get, without storing anything, and a client starting from that
// position is not reset by the first message. b.gen changes whenever the broker forgets a
// position it may have handed out (an evicted tombstone, Load); a channel recreated after
// that gets an epoch it never had, so an old position can't name a new message. (A channel
// dropped before its first message needs neither: it never handed out an offset.)
func (b *MemoryBroker) freshEpochLocked(name string) string {
	h := sha256.New()
	h.Write(b.gen[:])
	h.Write([]byte(name))
	return epochFrom(h.Sum(nil))
}

// channelLocked returns name's channel, creating it from its tombstone or afresh.
func (b *MemoryBroker) channelLocked(name string) *memChannel {
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
func (b *MemoryBroker) absentLocked(name string) session.Position {
	if e := b.tombs[name]; e != nil {
		t := e.Value.(*memTomb)
		return session.Position{Epoch: t.epoch, Offset: t.top}
	}
	return session.Position{Epoch: b.freshEpochLocked(name)}
}

// Start implements Broker.
func (b *MemoryBroker) Start(deliver func(*session.Message), _ func(sid, attachID string)) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.deliver = deliver
	return nil
}

// Publish implements Broker. Fan-out happens before Publish returns and under the
// channel's lock, so every subscriber sees a channel's messages in offset order. A
// publish with an idempotency key (WithIdempotencyKey) already used for channel within
// IdempotencyTTL publishes nothing and returns the first publish's message.
func (b *MemoryBroker) Publish(ctx context.Context, channel string, data json.RawMessage, bin []byte) (*session.Message, error) {
	return b.idem.publishOnce(ctx, b.cfg.Now(), channel, data, bin, func() (*session.Message, error) {
		return b.publish(channel, data, bin)
	})
}

// IdempotencyEvictions returns how many idempotency keys were forgotten before their
// IdempotencyTTL because MaxIdempotencyKeys was reached.
func (b *MemoryBroker) IdempotencyEvictions() uint64 {
	b.idem.mu.Lock()
	defer b.idem.mu.Unlock()
	return b.idem.evicted
}

func (b *MemoryBroker) publish(channel string, data json.RawMessage, bin []byte) (*session.Message, error) {
	for {
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return nil, ErrBrokerClosed
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
func (b *MemoryBroker) appendTo(ch *memChannel, channel string, data json.RawMessage, bin []byte, deliver func(*session.Message)) (*session.Message, bool) {
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
func (ch *memChannel) trim(h HistoryConfig, now time.Time) {
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

// Since implements Broker. A channel without state is read as empty at its tombstone's
// position or at offset 0 of the epoch it would begin with, and is not created.
func (b *MemoryBroker) Since(_ context.Context, channel string, pos session.Position, limit int) ([]*session.Message, session.Position, bool, error) {
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

// Subscribe implements Broker. One node hears everything, so there is nothing to
// subscribe to; but a subscribed channel is kept (and created now), so that the epoch its
// subscribers start from can't change under them before its first message.
func (b *MemoryBroker) Subscribe(_ context.Context, channel string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.subs[channel]++
	b.channelLocked(channel)
	return nil
}

// Unsubscribe implements Broker.
func (b *MemoryBroker) Unsubscribe(_ context.Context, channel string) error {
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
func (b *MemoryBroker) Channels() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.channels)
}

// tick is the sweeper's timer function. It takes sweepMu before it looks at closed, so
// that once Close has taken and released sweepMu no sweep starts.
func (b *MemoryBroker) tick() {
	b.sweepMu.Lock()
	defer b.sweepMu.Unlock()
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return
	}
	b.sweepHeld()
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.sweeper.Reset(b.cfg.SweepInterval)
	}
}

// sweep trims every channel's history by age, drops the channels left with neither
// history nor subscribers, forgets expired sessions, and returns the channels dropped.
func (b *MemoryBroker) sweep() int {
	b.sweepMu.Lock()
	defer b.sweepMu.Unlock()
	return b.sweepHeld()
}

// sweepHeld is sweep with sweepMu held. Each channel is locked on its own, so publishing
// goes on during a sweep.
func (b *MemoryBroker) sweepHeld() (dropped int) {
	now := b.cfg.Now()
	type named struct {
		name string
		ch   *memChannel
	}
	b.mu.Lock()
	all := make([]named, 0, len(b.channels))
	for name, ch := range b.channels {
		all = append(all, named{name, ch})
	}
	b.mu.Unlock()
	idle := all[:0]
	for _, c := range all {
		c.ch.mu.Lock()
		c.ch.trim(b.cfg.History, now)
		empty := len(c.ch.ring) == 0
		c.ch.mu.Unlock()
		if empty {
			idle = append(idle, c)
		}
	}
	for _, c := range idle {
		if b.drop(c.name, c.ch) {
			dropped++
		}
	}
	b.smu.Lock()
	b.sweepLocked(now)
	b.smu.Unlock()
	return dropped
}

// drop removes ch, the channel of name, if it still has neither history nor subscribers,
// keeping its position as a tombstone if it ever had a message.
func (b *MemoryBroker) drop(name string, ch *memChannel) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.channels[name] != ch || b.subs[name] > 0 {
		return false
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if len(ch.ring) > 0 {
		return false // published to since the trim
	}
	ch.dropped = true
	delete(b.channels, name)
	if ch.top > 0 {
		b.tombs[name] = b.tombList.PushBack(&memTomb{name: name, epoch: ch.epoch, top: ch.top})
		for len(b.tombs) > b.cfg.Tombstones {
			t := b.tombList.Remove(b.tombList.Front()).(*memTomb)
			delete(b.tombs, t.name)
			// t's positions are forgotten: its next incarnation needs an epoch it never had.
			rand.Read(b.gen[:])
		}
	}
	return true
}

// Ready implements Broker.
func (b *MemoryBroker) Ready(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrBrokerClosed
	}
	return nil
}

// Close implements Broker: publishing stops, and so does the sweeper (Close waits for a
// sweep under way). History and sessions can still be read and saved.
func (b *MemoryBroker) Close() error {
	b.mu.Lock()
	b.closed = true
	b.sweeper.Stop()
	b.mu.Unlock()
	b.sweepMu.Lock() // wait for a sweep the timer had already started
	b.sweepMu.Unlock()
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
	b.sweepDedupeLocked(now)
}

// sweepDedupeLocked forgets the dedupe windows that expired: every window lasts the same
// TTL after its latest mark, so they are the first ones of the LRU list.
func (b *MemoryBroker) sweepDedupeLocked(now time.Time) {
	for e := b.dedupeLRU.Front(); e != nil; e = b.dedupeLRU.Front() {
		d := e.Value.(*memDedupe)
		if !now.After(d.expires) {
			return
		}
		b.dedupeLRU.Remove(e)
		delete(b.dedupe, d.key)
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

// ledger returns the live dedupe window of key, or nil.
func (b *MemoryBroker) ledger(key string, now time.Time) *list.Element {
	e := b.dedupe[key]
	if e == nil {
		return nil
	}
	if now.After(e.Value.(*memDedupe).expires) {
		b.dedupeLRU.Remove(e)
		delete(b.dedupe, key)
		return nil
	}
	return e
}

// MarkUpstream implements session.Store.
func (b *MemoryBroker) MarkUpstream(_ context.Context, key string, seq uint64, result string, ttl time.Duration) (bool, string, error) {
	now := b.cfg.Now()
	b.smu.Lock()
	defer b.smu.Unlock()
	e := b.ledger(key, now)
	if e == nil {
		b.sweepDedupeLocked(now)
		for len(b.dedupe) >= b.cfg.MaxDedupeKeys {
			old := b.dedupeLRU.Remove(b.dedupeLRU.Front()).(*memDedupe)
			delete(b.dedupe, old.key)
			b.evicted++
		}
		e = b.dedupeLRU.PushBack(&memDedupe{key: key, ledger: session.NewLedger(b.cfg.DedupeWindow)})
		b.dedupe[key] = e
	}
	d := e.Value.(*memDedupe)
	d.expires = now.Add(ttl)
	b.dedupeLRU.MoveToBack(e)
	first, recorded := d.ledger.Mark(seq, result)
	return first, recorded, nil
}

// RecordUpstream implements session.Store.
func (b *MemoryBroker) RecordUpstream(_ context.Context, key string, seq uint64, result string, _ time.Duration) error {
	b.smu.Lock()
	defer b.smu.Unlock()
	if e := b.ledger(key, b.cfg.Now()); e != nil {
		e.Value.(*memDedupe).ledger.Record(seq, result)
	}
	return nil
}

// DedupeWindows returns the number of dedupe windows kept, and how many were forgotten
// so far because there were MaxDedupeKeys of them.
func (b *MemoryBroker) DedupeWindows() (kept int, evicted uint64) {
	b.smu.Lock()
	defer b.smu.Unlock()
	b.sweepDedupeLocked(b.cfg.Now())
	return len(b.dedupe), b.evicted
}

// Announce implements session.Store: on one node the Manager has already superseded.
func (b *MemoryBroker) Announce(context.Context, string, string) error { return nil }
