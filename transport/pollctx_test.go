package transport

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A pollCtx ends as a context.WithDeadline does: at its deadline (Err, Done, a child),
// or when cancelled, whichever comes first, and its cause says which.
func TestPollCtxEndsAsWithDeadline(t *testing.T) {
	t.Run("deadline, nothing waiting", func(t *testing.T) {
		c := newPollCtx(time.Now().Add(-time.Millisecond))
		cancel := c.cancel
		defer cancel()
		if !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Fatalf("Err past the deadline: %v", c.Err())
		}
		<-c.Done() // closed already
		if c.Err() != context.DeadlineExceeded || context.Cause(c) != context.DeadlineExceeded {
			t.Fatalf("Err %v, cause %v", c.Err(), context.Cause(c))
		}
	})
	t.Run("deadline, waited for", func(t *testing.T) {
		c := newPollCtx(time.Now().Add(20 * time.Millisecond))
		cancel := c.cancel
		defer cancel()
		if c.Err() != nil {
			t.Fatalf("Err before the deadline: %v", c.Err())
		}
		child, stop := context.WithCancel(c)
		defer stop()
		<-c.Done()
		<-child.Done()
		if c.Err() != context.DeadlineExceeded || child.Err() != context.DeadlineExceeded {
			t.Fatalf("Err %v, child's %v", c.Err(), child.Err())
		}
	})
	t.Run("cancelled, nothing waiting", func(t *testing.T) {
		c := newPollCtx(time.Now().Add(time.Hour))
		cancel := c.cancel
		cancel()
		if c.Err() != context.Canceled {
			t.Fatalf("Err after cancel: %v", c.Err())
		}
		<-c.Done()
		if c.Err() != context.Canceled || context.Cause(c) != context.Canceled {
			t.Fatalf("Err %v, cause %v once Done was asked", c.Err(), context.Cause(c))
		}
	})
	t.Run("cancelled after the deadline", func(t *testing.T) {
		// The deadline came first: it stays the reason, as for a context.WithDeadline
		// whose timer fired before the cancel.
		c := newPollCtx(time.Now().Add(-time.Millisecond))
		cancel := c.cancel
		cancel()
		if c.Err() != context.DeadlineExceeded {
			t.Fatalf("Err: %v", c.Err())
		}
		<-c.Done()
		if c.Err() != context.DeadlineExceeded {
			t.Fatalf("Err once Done was asked: %v", c.Err())
		}
	})
	t.Run("cancelled while waited for", func(t *testing.T) {
		c := newPollCtx(time.Now().Add(time.Hour))
		cancel := c.cancel
		child, stop := context.WithTimeout(c, time.Hour)
		defer stop()
		done := c.Done()
		cancel()
		<-done
		<-child.Done()
		if c.Err() != context.Canceled || child.Err() != context.Canceled {
			t.Fatalf("Err %v, child's %v", c.Err(), child.Err())
		}
	})
	t.Run("values", func(t *testing.T) {
		type key struct{}
		c := newPollCtx(time.Now().Add(time.Hour))
		cancel := c.cancel
		defer cancel()
		v := context.WithValue(c, key{}, "x")
		if v.Value(key{}) != "x" || c.Value(key{}) != nil {
			t.Fatal("values")
		}
		if d, ok := v.Deadline(); !ok || d != c.deadline {
			t.Fatalf("Deadline %v %v", d, ok)
		}
	})
}

// A request's context that nothing waits on costs one small allocation and no timer:
// context.WithTimeout cost three, and a timer started and stopped per poll.
func TestPollCtxUnwaitedIsCheap(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		c := newPollCtx(time.Now().Add(time.Second))
		cancel := c.cancel
		_ = c.Err()
		_, _ = c.Deadline()
		cancel()
	})
	if allocs > 1 {
		t.Errorf("%v allocations, want 1", allocs)
	}
	c := newPollCtx(time.Now().Add(time.Second))
	cancel := c.cancel
	cancel()
	if c.inner != nil {
		t.Error("an inner context was made for a context nothing waited on")
	}
}
