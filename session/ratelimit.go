package session

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// upstreamLimiter is a token bucket per session for upstream frames. It lives on one
// node: a client that spreads its frames over several nodes gets a bucket on each, which
// bounds the abuse by the number of nodes. Idle buckets are forgotten.
type upstreamLimiter struct {
	rate  rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[string]*sessionBucket
	swept   time.Time
}

type sessionBucket struct {
	lim  *rate.Limiter
	seen time.Time
}

func newUpstreamLimiter(perSecond float64, burst int) *upstreamLimiter {
	return &upstreamLimiter{rate: rate.Limit(perSecond), burst: burst, buckets: map[string]*sessionBucket{}}
}

// allow takes a token from sid's bucket.
func (l *upstreamLimiter) allow(sid string) bool {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > 10*time.Second {
		l.sweep(now)
	}
	b := l.buckets[sid]
	if b == nil {
		b = &sessionBucket{lim: rate.NewLimiter(l.rate, l.burst)}
		l.buckets[sid] = b
	}
	b.seen = now
	return b.lim.AllowN(now, 1)
}

// sweep forgets buckets idle long enough to have refilled: forgetting them changes nothing.
func (l *upstreamLimiter) sweep(now time.Time) {
	l.swept = now
	full := time.Duration(float64(l.burst)/float64(l.rate)*float64(time.Second)) + time.Second
	for sid, b := range l.buckets {
		if now.Sub(b.seen) > full {
			delete(l.buckets, sid)
		}
	}
}
