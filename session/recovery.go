package session

import (
	"context"
)

// runRecovery performs one history step for each subscription waiting for one, as far as
// the queue has room: a page never pushes the client over its queue bound, and the rest
// follows once the writer has taken what is queued. History is read without holding c.mu,
// so Deliver never waits on the broker.
func (c *Stream) runRecovery(ctx context.Context) error {
	c.mu.Lock()
	steps := len(c.recover)
	c.mu.Unlock()
	for range steps {
		c.mu.Lock()
		// Leave room for the live frames that arrive while the writer drains the page.
		room := min(c.cfg.PageSize, c.cfg.QueueMessages/2-len(c.queue))
		if len(c.recover) == 0 || c.closeErr != nil || room < 1 {
			c.mu.Unlock()
			return nil
		}
		s := c.recover[0]
		c.recover = c.recover[1:]
		s.queued = false
		base := s.pos
		c.mu.Unlock()

		sctx, cancel := ctx, context.CancelFunc(func() {})
		if c.cfg.StoreTimeout > 0 {
			sctx, cancel = context.WithTimeout(ctx, c.cfg.StoreTimeout)
		}
		msgs, top, ok, err := c.src.Since(sctx, s.ch, base, room)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.Close(Errorf(CodeReconnect, "history of %q unavailable", s.ch))
			return nil
		}
		if top.IsZero() {
			c.Close(Errorf(CodeInternal, "channel %q has no epoch", s.ch))
			return nil
		}
		c.mu.Lock()
		if !s.gone && c.closeErr == nil {
			c.recoveredLocked(s, base, msgs, top, ok)
		}
		c.unlock()
	}
	return nil
}

func (c *Stream) recoveredLocked(s *subscription, base Position, msgs []*Message, top Position, ok bool) {
	first := !s.started
	s.started = true
	switch {
	case base.IsZero():
		// "From now" means from the subscription, not from this history read: what was
		// published in between is already in pending, and must be delivered.
		s.pos = top
		if len(s.pending) > 0 && s.pending[0].Pos.Epoch == top.Epoch && s.pending[0].Pos.Offset <= top.Offset {
			s.pos.Offset = s.pending[0].Pos.Offset - 1
		}
		c.pushLocked(posFrame(FrameSub, s.ch, s.pos))
	case !ok:
		s.pos = top
		f := ServerFrame{T: FrameReset, Ch: s.ch, Ep: top.Epoch, Off: &top.Offset, Reason: "history does not cover the position"}
		c.pushLocked(f.Encode())
		if c.OnReset != nil {
			c.OnReset()
		}
	default:
		if first && s.confirm {
			c.pushLocked(posFrame(FrameSub, s.ch, base))
		}
		for _, m := range msgs {
			if m.Pos.Epoch == s.pos.Epoch && m.Pos.Offset == s.pos.Offset+1 {
				s.pos = m.Pos
				c.pushLocked(MessageFrame(m))
			}
		}
		if s.pos.Offset < top.Offset && len(msgs) > 0 {
			// More history than one page: continue once the writer has taken this one.
			c.scheduleLocked(s)
			return
		}
	}
	if c.closeErr != nil {
		return
	}
	// Caught up with history; what arrived live meanwhile follows.
	pending, overflow := s.pending, s.overflow
	s.pending, s.overflow, s.recovering = nil, false, false
	if overflow {
		s.recovering = true
		c.scheduleLocked(s)
		return
	}
	for i, m := range pending {
		c.acceptLocked(s, m)
		if s.recovering {
			// A gap after history: keep the rest for the next step.
			s.pending = append(s.pending, pending[i+1:]...)
			return
		}
	}
}
