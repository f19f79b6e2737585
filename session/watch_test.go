package session

import (
	"context"
	"errors"
	"testing"
	"time"
)

// refuseChannel allows everything but subscriptions to one channel.
type refuseChannel struct {
	allowAll
	channel string
}

func (h refuseChannel) Authorize(_ context.Context, _ Claims, act Action, ch string) error {
	if act == ActSubscribe && ch == h.channel {
		return Errorf(CodeForbidden, "not %s", ch)
	}
	return nil
}

// A watch reads its channels without a session, is refused as a whole for one channel
// the identity may not read or for a lapsed identity, is closed at a heartbeat once its
// identity lapses, and is closed by Shutdown like a session's attachment.
func TestWatch(t *testing.T) {
	src := newFakeSource()
	revoked := false
	m := NewManager(Config{Store: stuckStore{}, Source: src, Handler: refuseChannel{channel: "secret"},
		Revoked: func(context.Context, Claims) bool { return revoked }})
	ctx := context.Background()

	_, err := m.Watch(ctx, WatchRequest{Cursor: Cursor{{Channel: "c"}, {Channel: "secret"}}, Transport: "events"})
	var ref *Refusal
	if !errors.As(err, &ref) || ref.Channel != "secret" || AsError(err).Code != CodeForbidden {
		t.Fatalf("watch of a forbidden channel: %v, want a Refusal of secret with 4103", err)
	}
	if _, err := m.Watch(ctx, WatchRequest{Identity: Identity{Expires: time.Now().Add(-time.Second)}, Cursor: Cursor{{Channel: "c"}}}); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("expired identity: %v, want ErrTokenExpired", err)
	}

	a, err := m.Watch(ctx, WatchRequest{Identity: Identity{User: "u"}, Cursor: Cursor{{Channel: "c"}}, Transport: "events"})
	if err != nil {
		t.Fatal(err)
	}
	out, err := a.TryNext(ctx)
	if err != nil || len(out) != 1 || out[0].Kind != KindSub || out[0].Control().Channel != "c" {
		t.Fatalf("first frames %v, %v; want the sub frame of its starting position", out, err)
	}
	src.publish(2)
	for off := uint64(1); off <= 2; {
		out, err := a.TryNext(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range out {
			if o.Msg == nil || o.Msg.Pos.Offset != off {
				t.Fatalf("frame %s, want message %d", o.JSON, off)
			}
			off++
		}
	}
	if n := m.Attached(); n != 0 {
		t.Errorf("Attached() = %d with a watch only; watches are not sessions' attachments", n)
	}

	revoked = true
	a.Ping()
	if e := a.Err(); e != ErrRevoked {
		t.Fatalf("after a heartbeat with the identity revoked: %v, want ErrRevoked", e)
	}
	m.Detach(a)
	revoked = false

	b, err := m.Watch(ctx, WatchRequest{Cursor: Cursor{{Channel: "c"}}})
	if err != nil {
		t.Fatal(err)
	}
	m.Shutdown(ErrShutdown)
	if e := b.Err(); e != ErrShutdown {
		t.Fatalf("after Shutdown: %v, want ErrShutdown", e)
	}
	m.Detach(b)
	if _, err := m.Watch(ctx, WatchRequest{Cursor: Cursor{{Channel: "c"}}}); !errors.Is(err, ErrShutdown) {
		t.Fatalf("watch while draining: %v, want ErrShutdown", err)
	}
	m.mu.Lock()
	n := len(m.watches)
	m.mu.Unlock()
	if n != 0 {
		t.Errorf("%d watches left after Detach", n)
	}
}

// Lapsed is the identity check of a heartbeat, for requests without a session.
func TestLapsed(t *testing.T) {
	m := NewManager(Config{Store: stuckStore{}, Source: newFakeSource(), Handler: allowAll{},
		Revoked: func(_ context.Context, c Claims) bool { return c.User == "mallory" }})
	ctx := context.Background()
	if err := m.Lapsed(ctx, Identity{User: "alice"}); err != nil {
		t.Errorf("alice: %v", err)
	}
	if err := m.Lapsed(ctx, Identity{User: "alice", Expires: time.Now().Add(-time.Minute)}); err != ErrTokenExpired {
		t.Errorf("expired: %v", err)
	}
	if err := m.Lapsed(ctx, Identity{User: "mallory"}); err != ErrRevoked {
		t.Errorf("revoked: %v", err)
	}
}
