package session

import (
	"context"
	"errors"
	"fmt"
)

// HandleFrame processes a frame that arrived on a's own connection (WebSocket): it
// subscribes, unsubscribes, or processes upstream and queues the ack.
func (m *Manager) HandleFrame(ctx context.Context, a *Attachment, f *ClientFrame) {
	ctx, cancel := m.storeCtx(ctx)
	defer cancel()
	switch f.T {
	case FrameSub:
		if a.Len() >= m.cfg.MaxChannels {
			a.Enqueue((&ServerFrame{T: FrameUnsub, Ch: f.Ch, Code: CodeBadRequest,
				Reason: fmt.Sprintf("at most %d channels per session", m.cfg.MaxChannels)}).Encode())
			return
		}
		if m.subscribe(ctx, a, f.Ch, f.Position(), true) && m.cfg.Presence != nil {
			m.cfg.Presence.Present(ctx, a.Claims, []string{f.Ch})
		}
	case FrameUnsub:
		a.Unsubscribe(f.Ch)
		if m.cfg.Presence != nil {
			m.cfg.Presence.Absent(ctx, a.Claims, []string{f.Ch})
		}
	case FrameSend, FramePub:
		ack := m.upstream(ctx, a.Claims, f)
		if ack.Err == ErrSession {
			a.Close(ErrSession)
			return
		}
		a.Enqueue(ack.Frame())
	}
}

// Upstream processes send and pub frames that arrived by POST and returns one ack each,
// in order. The only error is ErrSession (the session is gone: nothing after it was
// processed). When the store fails on a frame (errStore, 4029), the frames after it are
// not processed and get errStoreSkipped (4029 too): the client resends them after a
// backoff, while the acks of the frames processed before the failure still reach it. Those
// carry outcomes that resends could not learn when the store failed to record them.
func (m *Manager) Upstream(ctx context.Context, c Claims, frames []ClientFrame) ([]Ack, error) {
	ctx, cancel := m.storeCtx(ctx)
	defer cancel()
	acks := make([]Ack, 0, len(frames))
	storeFailed := false
	for i := range frames {
		f := &frames[i]
		var ack Ack
		switch {
		case f.T != FrameSend && f.T != FramePub:
			ack = Ack{Seq: f.Seq, Err: Errorf(CodeBadRequest, "%s frames are not accepted by POST", f.T)}
		case storeFailed:
			m.cfg.Observer.Upstream("unavailable")
			ack = Ack{Seq: f.Seq, Err: errStoreSkipped}
		default:
			ack = m.upstream(ctx, c, f)
		}
		if ack.Err == ErrSession {
			return acks, ErrSession
		}
		storeFailed = storeFailed || ack.Err == errStore
		acks = append(acks, ack)
	}
	return acks, nil
}

var errRateLimited = &Error{Code: CodeRateLimited, Reason: "rate limited: resend after a backoff"}

// errInProgress answers a duplicate whose first attempt has no outcome yet. The frame's
// client resends it after a backoff, as after a rate limit, and then gets the outcome.
var errInProgress = &Error{Code: CodeRateLimited, Reason: "the first attempt of this frame is still being processed: resend after a backoff"}

// errStore answers a frame whose mark the store failed to take: it was not processed (or,
// if the mark was stored and its answer lost, its resends are answered errInProgress until
// the client gives up on it). Either way the client resends it after a backoff.
var errStore = &Error{Code: CodeRateLimited, Reason: "session store unavailable: resend after a backoff"}

// errStoreSkipped answers the frames of a POST after one that got errStore: not processed.
var errStoreSkipped = &Error{Code: CodeRateLimited, Reason: "not processed, the session store failed on an earlier frame: resend after a backoff"}

// upstream processes one send or pub frame at most once per DedupeKey and seq, and
// answers a duplicate as its first attempt was answered (see outcome).
func (m *Manager) upstream(ctx context.Context, c Claims, f *ClientFrame) Ack {
	act, ch := ActSend, ""
	if f.T == FramePub {
		act, ch = ActPublish, f.Ch
	}
	// Authorize before deduplicating, so that a refused frame stays refused when resent.
	if err := m.cfg.Handler.Authorize(ctx, c, act, ch); err != nil {
		m.cfg.Observer.Upstream("refused")
		return Ack{Seq: f.Seq, Err: refusal(err, act.String()+" "+ch)}
	}
	if m.rate != nil && !m.rate.Allow(c.SID) {
		m.cfg.Observer.Upstream("rate_limited")
		return Ack{Seq: f.Seq, Err: errRateLimited}
	}
	key := DedupeKey(c)
	// Until its handler has returned, a frame's mark says "pending": a duplicate that
	// comes meanwhile (the client resent it after its request failed) is told to resend
	// later, and gets the outcome then. A send marked "ok" up front was acked "ok" to such
	// a duplicate while its handler was still running, and stayed "ok" when the handler
	// failed and recording the failure failed too (a store failing over): acknowledged,
	// never processed. The mark names this attempt: finding it already there means the
	// store's client sent it twice (pendingOutcome), not that a duplicate is under way.
	mark := pendingOutcome()
	first, recorded, err := m.cfg.Store.MarkUpstream(ctx, key, f.Seq, mark, m.cfg.DedupeTTL)
	if errors.Is(err, ErrSession) {
		return Ack{Seq: f.Seq, Err: ErrSession}
	}
	if err != nil {
		m.cfg.Logger.Warn("dedupe store failed", "sid", c.SID, "key", key, "err", err)
		m.cfg.Observer.Upstream("unavailable")
		return Ack{Seq: f.Seq, Err: errStore}
	}
	if !first && recorded != mark {
		ack := replay(f.Seq, recorded)
		if ack.Err == errInProgress {
			m.cfg.Observer.Upstream("in_progress")
		} else {
			m.cfg.Observer.Upstream("duplicate")
		}
		return ack
	}
	if f.T == FramePub {
		pos, err := m.cfg.Handler.Publish(ctx, c, f)
		if err != nil {
			// The frame counts as processed: a failed publish is reported, not retried, so
			// that a publish that did land but timed out can't land twice.
			e := AsError(err)
			m.record(c, key, f.Seq, errorOutcome(e))
			return Ack{Seq: f.Seq, Err: e}
		}
		m.record(c, key, f.Seq, positionOutcome(pos))
		m.cfg.Observer.Upstream("ok")
		return Ack{Seq: f.Seq, Pos: pos}
	}
	if err := m.cfg.Handler.Send(ctx, c, f); err != nil {
		e := AsError(err)
		m.record(c, key, f.Seq, errorOutcome(e))
		m.cfg.Observer.Upstream("refused")
		return Ack{Seq: f.Seq, Err: e}
	}
	m.record(c, key, f.Seq, outcomeOK)
	m.cfg.Observer.Upstream("ok")
	return Ack{Seq: f.Seq}
}

// record stores the outcome of a processed frame for its duplicates. It has its own
// StoreTimeout: the frame's may have gone into processing it. A failure leaves the mark
// pending: its resends are answered "in progress" until the client gives up on the frame
// (send timeout: its outcome is unknown), which is the truth, and is logged.
func (m *Manager) record(c Claims, key string, seq uint64, outcome string) {
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.StoreTimeout)
	defer cancel()
	if err := m.cfg.Store.RecordUpstream(ctx, key, seq, outcome, m.cfg.DedupeTTL); err != nil {
		m.cfg.Logger.Warn("recording an upstream outcome failed", "sid", c.SID, "key", key, "seq", seq, "err", err)
	}
}
