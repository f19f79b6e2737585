package session

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

// stuckStore never answers: every call waits for its context, like a paused Redis.
type stuckStore struct{}

func (stuckStore) CreateSession(ctx context.Context, _ string, _ time.Duration) error {
	<-ctx.Done()
	return ctx.Err()
}

func (stuckStore) TouchSession(ctx context.Context, _ string, _ time.Duration) (bool, error) {
	<-ctx.Done()
	return false, ctx.Err()
}

func (stuckStore) MarkUpstream(ctx context.Context, _ string, _ uint64, _ string, _ time.Duration) (bool, string, error) {
	<-ctx.Done()
	return false, "", ctx.Err()
}

func (stuckStore) RecordUpstream(ctx context.Context, _ string, _ uint64, _ string, _ time.Duration) error {
	<-ctx.Done()
	return ctx.Err()
}

func (stuckStore) Announce(ctx context.Context, _, _ string) error {
	<-ctx.Done()
	return ctx.Err()
}

type allowAll struct{}

func (allowAll) Authorize(context.Context, Claims, Action, string) error { return nil }
func (allowAll) Send(context.Context, Claims, *ClientFrame) error        { return nil }
func (allowAll) Publish(context.Context, Claims, *ClientFrame) (Position, error) {
	return Position{}, nil
}

// A store that stops answering fails every request that needs it once StoreTimeout has
// passed, even one made with a context that never ends, with the retry code (4000,
// HTTP 503), not an internal error; an upstream frame gets its own retry code (4029).
func TestStoreTimeoutFailsRequestsWithRetry(t *testing.T) {
	m := NewManager(Config{Store: stuckStore{}, Source: newFakeSource(), Handler: allowAll{}, StoreTimeout: 20 * time.Millisecond})
	claims := Claims{SID: NewSessionID(), Issued: time.Now()}
	cred := m.cfg.Signer.Issue(claims)
	ctx := context.Background()
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrStoreUnavailable) {
			t.Errorf("%s: %v, want ErrStoreUnavailable", what, err)
			return
		}
		if e := AsError(err); e.Code != CodeReconnect {
			t.Errorf("%s: answered %v, want 4000 (which HTTP answers 503: internal/httpx)", what, e)
		}
	}
	_, err := m.Verify(ctx, cred, nil)
	check("verify", err)
	_, err = m.Negotiate(ctx, "", Identity{}, "")
	check("negotiate", err)
	_, err = m.Negotiate(ctx, cred, Identity{}, "")
	check("resume", err)
	_, err = m.Attach(ctx, AttachRequest{Claims: claims, Transport: "websocket"})
	check("attach", err)
	// An upstream frame the store could not mark has no outcome yet: 4029, resend later.
	acks, err := m.Upstream(ctx, claims, []ClientFrame{{T: FrameSend, Seq: 1}})
	if err != nil || len(acks) != 1 || acks[0].Err == nil || acks[0].Err.Code != CodeRateLimited {
		t.Errorf("upstream: %+v, %v; want one ack with 4029", acks, err)
	}
}

// A request whose context ends within StoreTimeout already (a transport's store bound)
// is not given another, later one; one without a bound, or a later one, is bounded by
// StoreTimeout. Either way a stuck store fails it in time.
func TestStoreCtxBound(t *testing.T) {
	m := NewManager(Config{Store: stuckStore{}, Source: newFakeSource(), Handler: allowAll{}, StoreTimeout: time.Hour})
	sooner, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	ctx, done := m.storeCtx(sooner)
	done()
	if ctx != sooner {
		t.Errorf("a context ending before StoreTimeout got another bound")
	}
	if ctx.Err() != nil {
		t.Errorf("the store bound's cancel ended the request's context")
	}
	later, cancel2 := context.WithTimeout(context.Background(), 2*time.Hour)
	defer cancel2()
	for _, parent := range []context.Context{context.Background(), later} {
		ctx, done := m.storeCtx(parent)
		d, ok := ctx.Deadline()
		done()
		if !ok || time.Until(d) > time.Hour {
			t.Errorf("store bound %v (set: %v), want within StoreTimeout", time.Until(d), ok)
		}
	}
	claims := Claims{SID: NewSessionID(), Issued: time.Now()}
	if _, err := m.Verify(sooner, m.cfg.Signer.Issue(claims), nil); err == nil {
		t.Errorf("verify on a stuck store succeeded")
	}
}

// blockingSource has no answer for history reads: Since waits for its context.
type blockingSource struct{ *fakeSource }

func (s blockingSource) Since(ctx context.Context, _ string, _ Position, _ int) ([]*Message, Position, bool, error) {
	<-ctx.Done()
	return nil, Position{}, false, ctx.Err()
}

// A history read that gets no answer within StoreTimeout closes the attachment with 4000
// (the client resumes later) instead of holding its writer, whose context never ends.
func TestHistoryReadTimeoutCloses(t *testing.T) {
	src := blockingSource{newFakeSource()}
	c := NewStream(src, StreamConfig{QueueMessages: 64, QueueBytes: 1 << 20, BatchMessages: 100, BatchBytes: 1 << 20,
		PageSize: 32, StoreTimeout: 20 * time.Millisecond})
	c.Subscribe("c", Position{"e1", 1}, false)
	out, err := c.TryNext(context.Background())
	if err != nil || len(out) != 1 || !isFrame(out[0], FrameClose) {
		t.Fatalf("TryNext: %v %v, want the close frame", out, err)
	}
	if e := c.Err(); e == nil || e.Code != CodeReconnect {
		t.Fatalf("closed with %v, want 4000", e)
	}
}

// TryNextLocal never reads history: with a read due it hands the writer back with
// ErrNeedsSource (a pool worker then moves to a goroutine of its own, which calls
// TryNext); live frames it returns like TryNext.
func TestTryNextLocalLeavesHistoryToTryNext(t *testing.T) {
	src := newFakeSource()
	src.publish(3)
	c := testStream(src, 64)
	c.Subscribe("c", Position{"e1", 1}, false)
	reads := func() int { src.mu.Lock(); defer src.mu.Unlock(); return src.sinceN }
	if out, err := c.TryNextLocal(); out != nil || !errors.Is(err, ErrNeedsSource) || reads() != 0 {
		t.Fatalf("TryNextLocal with history due: %v %v after %d reads, want ErrNeedsSource and none", out, err, reads())
	}
	out, err := c.TryNext(context.Background())
	if err != nil || len(out) != 2 || reads() != 1 {
		t.Fatalf("TryNext: %d frames, %v, %d reads; want offsets 2 and 3 from one read", len(out), err, reads())
	}
	src.publish(1)
	out, err = c.TryNextLocal()
	if err != nil || len(out) != 1 || reads() != 1 {
		t.Fatalf("TryNextLocal with a live frame: %d frames, %v, %d reads", len(out), err, reads())
	}
	if out, err := c.TryNextLocal(); out != nil || err != nil {
		t.Fatalf("TryNextLocal with nothing: %v %v", out, err)
	}
}

func isFrame(o Outgoing, t string) bool {
	var f struct {
		T string `json:"t"`
	}
	return json.Unmarshal(o.JSON, &f) == nil && f.T == t
}
