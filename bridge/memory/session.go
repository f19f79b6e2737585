package memory

import (
	"container/list"
	"context"
	"time"

	"github.com/ferryrt/ferry/bridge/broker"
	"github.com/ferryrt/ferry/session"
)

// The session store of a Broker: liveness, dedupe windows and attachment notices.

// CreateSession implements session.Store.
func (b *Broker) CreateSession(_ context.Context, sid string, ttl time.Duration) error {
	now := b.cfg.Now()
	b.smu.Lock()
	defer b.smu.Unlock()
	if len(b.sessions) >= b.cfg.MaxSessions || now.Sub(b.lastSweep) > time.Second {
		b.sweepLocked(now)
	}
	if len(b.sessions) >= b.cfg.MaxSessions {
		return broker.ErrTooManySessions
	}
	b.sessions[sid] = &memSession{expires: now.Add(ttl)}
	return nil
}

func (b *Broker) sweepLocked(now time.Time) {
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
func (b *Broker) sweepDedupeLocked(now time.Time) {
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
func (b *Broker) Sessions() int {
	b.smu.Lock()
	defer b.smu.Unlock()
	b.sweepLocked(b.cfg.Now())
	return len(b.sessions)
}

func (b *Broker) live(sid string, now time.Time) *memSession {
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
func (b *Broker) TouchSession(_ context.Context, sid string, ttl time.Duration) (bool, error) {
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
func (b *Broker) ledger(key string, now time.Time) *list.Element {
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
func (b *Broker) MarkUpstream(_ context.Context, key string, seq uint64, result string, ttl time.Duration) (bool, string, error) {
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
func (b *Broker) RecordUpstream(_ context.Context, key string, seq uint64, result string, _ time.Duration) error {
	b.smu.Lock()
	defer b.smu.Unlock()
	if e := b.ledger(key, b.cfg.Now()); e != nil {
		e.Value.(*memDedupe).ledger.Record(seq, result)
	}
	return nil
}

// DedupeWindows returns the number of dedupe windows kept, and how many were forgotten
// so far because there were MaxDedupeKeys of them.
func (b *Broker) DedupeWindows() (kept int, evicted uint64) {
	b.smu.Lock()
	defer b.smu.Unlock()
	b.sweepDedupeLocked(b.cfg.Now())
	return len(b.dedupe), b.evicted
}

// Announce implements session.Store: on one node the Manager has already superseded.
func (b *Broker) Announce(context.Context, string, string) error { return nil }
