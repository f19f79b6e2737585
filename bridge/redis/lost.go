package redis

import (
	"context"
	"fmt"
	"hash/maphash"

	"github.com/ferryrt/ferry/bridge/broker"
	"github.com/ferryrt/ferry/session"
)

// History lost with a master. Redis replicates asynchronously: a master that dies takes
// with it what had not reached its replica, and the replica, promoted, assigns those
// offsets again, to other messages, in the same epoch. A client that received a lost
// message would take the new message at its offset for one it already has, and resume
// past it: a silent gap. The positions alone cannot show it; what a node delivered can.
//
// So a node remembers, per channel it serves, the last message it delivered (its
// position and a digest of its payload: delivered). Whenever it may have missed something
// (a new generation of pub/sub connections, after any failure or slot move), it holds the
// channel's live messages until the catch-up has checked that Redis still has that
// message at that position (verify); and a live message that comes at that very position
// with another payload shows the same (pass). A channel whose history was lost gets a
// new epoch (rebase: compare-and-set, so that nodes finding it at once make one), which
// every client of the channel gets a reset for; the node's own attachments are told by
// the channel's latest message in the new epoch, and no message of the broken epoch
// reaches them any more.

// delivered is what a node remembers of one channel it serves (Broker.seen, under mu):
// one small record, dropped with the channel's last subscriber (Unsubscribe).
type delivered struct {
	pos     session.Position // of the last message delivered
	sum     uint64           // digest of its payload (payloadSum)
	checked bool             // pos is known to be in Redis since the current generation began
	broken  string           // an epoch found to have lost history: its messages are dropped
	// held is the newest live message after pos while pos is not checked: delivered
	// once it is (what came before it, attachments read from history), dropped if pos
	// was lost.
	held *session.Message
}

// payloadSum is the digest of m's payload that delivered keeps. Only this node compares
// its digests, so they need no stable seed; 64 bits of a keyed hash make a collision of
// two payloads published at one offset negligible.
func (b *Broker) payloadSum(m *session.Message) uint64 {
	var h maphash.Hash
	h.SetSeed(b.sumSeed)
	if m.Data != nil {
		h.WriteByte(kindJSON[0])
		h.Write(m.Data)
	} else {
		h.WriteByte(kindBinary[0])
		h.Write(m.Bin)
	}
	return h.Sum64()
}

// lastDelivered returns the position of the last message this node delivered on ch
// while that is not checked in the current generation, and the zero position otherwise.
func (b *Broker) lastDelivered(ch string) session.Position {
	b.mu.Lock()
	defer b.mu.Unlock()
	if d := b.seen[ch]; d != nil && !d.checked {
		return d.pos
	}
	return session.Position{}
}

// pass delivers m unless it is not newer than what this node delivered on its channel
// (catch-up and pub/sub can both bring it), it belongs to an epoch that lost history, or
// it came live (from pub/sub) while the channel's last delivered message is not checked
// yet: then it is held. A message at the very position of the last one delivered, with
// another payload, shows that history was lost.
func (b *Broker) pass(m *session.Message, live bool) {
	sum := b.payloadSum(m)
	b.passMu.Lock()
	defer b.passMu.Unlock()
	b.mu.Lock()
	if _, ok := b.want[m.Channel]; !ok {
		b.mu.Unlock()
		return
	}
	d := b.seen[m.Channel]
	if d == nil {
		d = &delivered{checked: true}
		b.seen[m.Channel] = d
	}
	same := m.Pos.Epoch == d.pos.Epoch
	switch {
	case m.Pos.Epoch == d.broken:
		b.mu.Unlock()
		return
	case same && m.Pos.Offset == d.pos.Offset:
		if sum != d.sum {
			b.lostLocked(m.Channel, d, "a message at the offset this node delivered last, with another payload")
		}
		b.mu.Unlock()
		return
	case same && m.Pos.Offset < d.pos.Offset:
		b.mu.Unlock()
		return
	case same && live && !d.checked:
		if d.held == nil || d.held.Pos.Offset < m.Pos.Offset {
			d.held = m
		}
		b.mu.Unlock()
		return
	case !same:
		// Another epoch comes from Redis as it is now: nothing older to check.
		d.checked, d.held = true, nil
	}
	d.pos, d.sum = m.Pos, sum
	deliver := b.deliver
	b.mu.Unlock()
	if deliver != nil {
		deliver(m)
	}
}

// lostLocked marks d's epoch broken. A channel already checked in the current
// generation gets checked again by a new one, whose catch-up starts the new epoch.
func (b *Broker) lostLocked(ch string, d *delivered, why string) {
	b.log.Warn("redis lost history of a channel (a failover?): starting a new epoch, its clients get a reset",
		"channel", ch, "epoch", d.pos.Epoch, "delivered_offset", d.pos.Offset, "found", why)
	d.broken, d.held = d.pos.Epoch, nil
	if d.checked {
		d.checked = false
		if b.failGen != nil {
			b.failGen(fmt.Errorf("history of %s lost: %s", ch, why))
		}
	}
}

// verify checks the last message this node delivered on ch against what Redis holds
// now: epoch ep, top, and at, the entry at that message's offset (nil when Redis has
// none: another epoch, above top, or trimmed). It returns the epoch to rebase when
// history was lost (the top is below that offset, or the entry there is another
// message), or else the live message held meanwhile, to deliver after the channel's
// latest. An entry trimmed from history cannot be compared: it passes.
func (b *Broker) verify(ch, ep string, top uint64, at *session.Message) (broken string, held *session.Message) {
	var sum uint64
	if at != nil {
		sum = b.payloadSum(at)
	}
	b.passMu.Lock()
	defer b.passMu.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	d := b.seen[ch]
	if _, ok := b.want[ch]; !ok || d == nil || d.checked {
		return "", nil
	}
	switch {
	case ep == "":
		// No state: the next publish or read starts a new epoch anyway.
	case d.broken == ep:
		return ep, nil
	case ep == d.pos.Epoch && top < d.pos.Offset:
		b.lostLocked(ch, d, fmt.Sprintf("the channel's top is %d", top))
		return ep, nil
	case ep == d.pos.Epoch && at != nil && sum != d.sum:
		b.lostLocked(ch, d, "another message at the offset this node delivered last")
		return ep, nil
	}
	d.checked, held, d.held = true, d.held, nil
	return "", held
}

// rebase starts a new epoch for ch, whose epoch broken lost history, unless another node
// already did (luaRebase), and returns the channel's latest message in the epoch it has
// now, which tells the attachments of this node (they hold a position of the broken
// epoch) to read history, and so get a reset.
func (b *Broker) rebase(ctx context.Context, ch, broken string) (*session.Message, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	res, err := luaRebase.Run(ctx, b.rdb, []string{b.keys.meta(ch), b.keys.log(ch)}, broken, broker.NewEpoch()).Slice()
	if err != nil {
		return nil, fmt.Errorf("new epoch for %s: %w", ch, err)
	}
	if len(res) != 3 {
		return nil, malformed("new epoch answer for %s", ch)
	}
	ep, _ := res[0].(string)
	b.mu.Lock()
	if d := b.seen[ch]; d != nil && !d.checked {
		d.checked = true
	}
	b.mu.Unlock()
	if ep != broken {
		b.log.Info("channel in a new epoch after lost history", "channel", ch, "epoch", ep, "broken_epoch", broken)
	}
	return b.entry(ch, ep, res[2]), nil
}
