package session

import (
	"context"
	"errors"
	"time"
)

// TryNext is Next without waiting and without heartbeats: it returns the frames that are
// ready, running history recovery first, or none (nil, nil), which makes the writer idle
// (see OnWake). The close frame and the close reason come as from Next. A transport that
// keeps no goroutine waiting in Next drains with it and sends heartbeats with Ping.
func (c *Stream) TryNext(ctx context.Context) ([]Outgoing, error) { return c.ready(ctx, true, false) }

// ErrNeedsSource is returned by TryNextLocal when history must be read first.
var ErrNeedsSource = errors.New("session: history to read from the source")

// TryNextLocal is TryNext for a writer that must never wait on the network, such as a
// task of a worker pool: when a history read is due (a new subscription, a gap), it
// reads nothing and returns ErrNeedsSource, leaving the writer busy; the caller then
// continues with TryNext on a goroutine of its own, where the read may take up to
// StreamConfig.StoreTimeout.
func (c *Stream) TryNextLocal() ([]Outgoing, error) {
	return c.ready(context.Background(), true, true)
}

// ready returns what Next would return without waiting, or nil, nil; idle marks the
// writer idle when there is nothing, in the same critical section that found nothing, so
// a frame pushed right after wakes it. local returns ErrNeedsSource rather than read
// history.
func (c *Stream) ready(ctx context.Context, idle, local bool) ([]Outgoing, error) {
	c.mu.Lock()
	for {
		if len(c.recover) > 0 && c.closeErr == nil {
			if local {
				c.mu.Unlock()
				return nil, ErrNeedsSource
			}
			c.mu.Unlock()
			if err := c.runRecovery(ctx); err != nil {
				return nil, err
			}
			c.mu.Lock()
		}
		if c.closeErr != nil {
			e, sent := c.closeErr, c.closeSent
			c.closeSent = true
			c.mu.Unlock()
			// A close from Deliver (slow consumer) left its subscriptions to release here.
			c.releaseSubs()
			if sent {
				return nil, e
			}
			return []Outgoing{closeFrame(e)}, nil
		}
		if len(c.queue) > 0 {
			out := c.takeLocked()
			c.mu.Unlock()
			return out, nil
		}
		if len(c.recover) == 0 {
			if idle {
				c.busy = false
			}
			c.mu.Unlock()
			return nil, nil
		}
	}
}

// Ready reports whether TryNext has something to return (frames, recovery or the close).
func (c *Stream) Ready() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue) > 0 || len(c.recover) > 0 || (c.closeErr != nil && !c.closeSent)
}

// Ping queues a ping frame now, for a transport that keeps the heartbeat itself (see
// TryNext), and runs OnHeartbeat.
func (c *Stream) Ping() { c.ping(time.Now(), true) }

// PingLater is Ping without waking an idle writer: the ping goes out with the next frame
// that does, in the same write, or with Flush. A transport whose heartbeats of many
// connections come together (transport/internal/beat) calls Flush a little later, so that
// where data flows the ping costs no write of its own.
func (c *Stream) PingLater() { c.ping(time.Now(), false) }

// Flush wakes an idle writer if frames are queued: a ping of PingLater's that no other
// frame has carried yet.
func (c *Stream) Flush() {
	c.mu.Lock()
	if len(c.queue) > 0 {
		c.wake()
	}
	c.mu.Unlock()
}

// Next blocks until frames are ready and returns them, at most a batch. holdUntil, if not
// zero, makes Next return a ping frame at that time if nothing else came (long-polling).
// After the attachment is closed, Next returns the close frame once and then the close
// reason as the error. A cancelled ctx returns ctx.Err().
func (c *Stream) Next(ctx context.Context, holdUntil time.Time) ([]Outgoing, error) {
	// From here on wakes reach notify; one that came before found what it woke for
	// queued, where the ready below looks first.
	c.mu.Lock()
	c.waits = true
	c.mu.Unlock()
	var hb, hold *time.Timer
	defer func() {
		if hb != nil {
			hb.Stop()
		}
		if hold != nil {
			hold.Stop()
		}
	}()
	for {
		// Heartbeats are due by the clock, not by silence: a busy stream carries them too,
		// so the client can time them and the session stays touched.
		if c.cfg.Heartbeat > 0 {
			now := time.Now()
			if c.nextPing.IsZero() {
				c.nextPing = now.Add(c.cfg.Heartbeat)
			} else if !now.Before(c.nextPing) {
				c.ping(now, true)
			}
		}
		if out, err := c.ready(ctx, false, false); out != nil || err != nil {
			return out, err
		}

		var hbC, holdC <-chan time.Time
		if c.cfg.Heartbeat > 0 {
			if hb == nil {
				hb = time.NewTimer(time.Until(c.nextPing))
			}
			hbC = hb.C
		}
		if !holdUntil.IsZero() {
			if hold == nil {
				hold = time.NewTimer(time.Until(holdUntil))
			}
			holdC = hold.C
		}
		select {
		case <-c.notify:
		case <-hbC:
			hb = nil // the loop sends the ping that is now due
		case <-holdC:
			hold = nil
			holdUntil = time.Time{}
			c.ping(time.Now(), true)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (c *Stream) ping(now time.Time, wake bool) {
	c.mu.Lock()
	c.pingSeq++
	if c.cfg.Heartbeat > 0 {
		c.nextPing = now.Add(c.cfg.Heartbeat)
	}
	if c.closeErr == nil && c.queueLocked(PingFrame(c.pingSeq, now.UnixMilli())) && wake {
		c.wake()
	}
	c.unlock()
	if c.OnHeartbeat != nil {
		c.OnHeartbeat()
	}
}

func (c *Stream) takeLocked() []Outgoing {
	n, size := 0, 0
	for n < len(c.queue) && n < c.cfg.BatchMessages {
		size += len(c.queue[n].JSON)
		if n > 0 && size > c.cfg.BatchBytes {
			break
		}
		n++
	}
	if n == len(c.queue) {
		// All of it, the usual case: the queue's array becomes the batch, with no copy,
		// and the next push starts another.
		out := c.queue
		c.queue, c.qbytes = nil, 0
		return out
	}
	out := make([]Outgoing, n)
	copy(out, c.queue)
	clear(c.queue[:n])
	c.queue = c.queue[n:]
	if len(c.queue) == 0 {
		c.queue = nil // let the backing array go
	}
	for _, o := range out {
		c.qbytes -= len(o.JSON)
	}
	return out
}
