package transport

// The context of a request of a taken-over connection: bounded by StoreTimeout and
// cancelled when the client leaves, like the context.WithTimeout it replaces, but with
// no timer started unless something waits on it.

import (
	"context"
	"sync"
	"time"
)

// pollCtx is a context with a deadline whose machinery (a context.WithDeadline, which
// starts a timer) is made only when something asks for its Done channel, its values or
// a child: on the memory store a poll's store calls never do, and the context's timer
// was a large part of a poll's cost in the runtime's timers and allocations. Until then
// Err reads the deadline and the cancellation itself; it answers as the inner context
// would.
type pollCtx struct {
	deadline time.Time

	mu    sync.Mutex
	inner context.Context // nil until needed
	stop  context.CancelFunc
	err   error // how it ended, if it ended (cancel) before inner was made
}

// newPollCtx returns a context that ends at deadline or when its cancel method is
// called, which must be called once the request no longer needs it. (A CancelFunc
// would cost a second allocation: the method value.)
func newPollCtx(deadline time.Time) *pollCtx { return &pollCtx{deadline: deadline} }

// made returns the inner context, making it if need be.
func (c *pollCtx) made() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inner == nil {
		if c.err == context.Canceled {
			c.inner, c.stop = context.WithCancel(context.Background())
			c.stop()
		} else {
			c.inner, c.stop = context.WithDeadline(context.Background(), c.deadline)
		}
	}
	return c.inner
}

func (c *pollCtx) cancel() {
	c.mu.Lock()
	if c.inner == nil && c.err == nil {
		// The first end counts, as for a context.WithDeadline.
		c.err = context.Canceled
		if !time.Now().Before(c.deadline) {
			c.err = context.DeadlineExceeded
		}
	}
	stop := c.stop
	c.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// Deadline implements context.Context.
func (c *pollCtx) Deadline() (time.Time, bool) { return c.deadline, true }

// Done implements context.Context.
func (c *pollCtx) Done() <-chan struct{} { return c.made().Done() }

// Value implements context.Context; it is also how context finds the inner context to
// hang a child on, and the cause of its end.
func (c *pollCtx) Value(key any) any { return c.made().Value(key) }

// Err implements context.Context.
func (c *pollCtx) Err() error {
	c.mu.Lock()
	inner, err := c.inner, c.err
	c.mu.Unlock()
	switch {
	case inner != nil:
		return inner.Err()
	case err != nil:
		return err
	case !time.Now().Before(c.deadline):
		return context.DeadlineExceeded
	}
	return nil
}
