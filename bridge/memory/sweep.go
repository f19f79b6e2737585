package memory

import "github.com/google/uuid"

// The sweeper of a Broker: it trims history by age, drops idle channels and forgets
// expired sessions, every SweepInterval.

// tick is the sweeper's timer function. It takes sweepMu before it looks at closed, so
// that once Close has taken and released sweepMu no sweep starts.
func (b *Broker) tick() {
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

// Sweep trims every channel's history by age, drops the channels left with neither
// history nor subscribers, forgets expired sessions, and returns the channels dropped.
// The sweeper calls it every SweepInterval.
func (b *Broker) Sweep() int {
	b.sweepMu.Lock()
	defer b.sweepMu.Unlock()
	return b.sweepHeld()
}

// sweepHeld is sweep with sweepMu held. Each channel is locked on its own, so publishing
// goes on during a sweep.
func (b *Broker) sweepHeld() (dropped int) {
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
func (b *Broker) drop(name string, ch *memChannel) bool {
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
			b.gen = uuid.New()
		}
	}
	return true
}
