// Package keyrate is a table of token buckets by key: the one rate limiter behind
// transport's new sessions per client address and session's upstream frames per session.
// A table lives on one node; idle buckets are forgotten, which changes nothing, since a
// bucket idle long enough to be forgotten is full again.
package keyrate

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Sweeping: every sweepEvery, or once a second while the table holds more than
// crowded buckets (a flood of new keys).
const (
	sweepEvery = 10 * time.Second
	crowded    = 100_000
)

// Table holds a token bucket per key, each refilled at the same rate and holding the
// same burst. It is safe for concurrent use.
type Table struct {
	rate  rate.Limit
	burst int
	idle  time.Duration // how long a bucket takes to fill up from empty, and a second

	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

// New returns a Table of buckets refilled at perSecond tokens a second and holding
// burst; perSecond must be positive.
func New(perSecond float64, burst int) *Table {
	return &Table{
		rate:    rate.Limit(perSecond),
		burst:   burst,
		idle:    time.Duration(float64(burst)/perSecond*float64(time.Second)) + time.Second,
		buckets: map[string]*bucket{},
		swept:   time.Now(),
	}
}

// Allow takes a token from key's bucket and reports whether there was one.
func (t *Table) Allow(key string) bool { return t.allowAt(key, time.Now()) }

func (t *Table) allowAt(key string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if since := now.Sub(t.swept); since > sweepEvery || (len(t.buckets) >= crowded && since > time.Second) {
		t.sweep(now)
	}
	b := t.buckets[key]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(t.rate, t.burst)}
		t.buckets[key] = b
	}
	b.seen = now
	return b.lim.AllowN(now, 1)
}

// sweep forgets the buckets idle long enough to be full again.
func (t *Table) sweep(now time.Time) {
	t.swept = now
	for k, b := range t.buckets {
		if now.Sub(b.seen) > t.idle {
			delete(t.buckets, k)
		}
	}
}

// Len returns how many buckets the table holds.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.buckets)
}
