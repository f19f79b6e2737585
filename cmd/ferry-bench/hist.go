package main

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// hist is a log-linear latency histogram in microseconds, safe for concurrent Record
// without locks: 64 sub-buckets per power of two keep every percentile within 1.6% of
// the true value, and a bucket is one atomic counter, so tens of thousands of readers
// can share one histogram at millions of records per second.
type hist struct {
	counts [64 << subBits]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64 // microseconds
	max    atomic.Uint64
}

const subBits = 6

func bucketOf(us uint64) int {
	if us < 2<<subBits {
		return int(us)
	}
	e := bits.Len64(us) - subBits - 1
	return e<<subBits + int(us>>e)
}

// bucketLow returns the smallest value of bucket i.
func bucketLow(i int) uint64 {
	if i < 2<<subBits {
		return uint64(i)
	}
	e := i>>subBits - 1
	return uint64(i-e<<subBits) << e
}

// Record adds one latency.
func (h *hist) Record(d time.Duration) {
	us := uint64(max(d, 0) / time.Microsecond)
	h.counts[bucketOf(us)].Add(1)
	h.n.Add(1)
	h.sum.Add(us)
	for {
		m := h.max.Load()
		if us <= m || h.max.CompareAndSwap(m, us) {
			return
		}
	}
}

// Count returns the number of records.
func (h *hist) Count() uint64 { return h.n.Load() }

// Quantile returns the latency at quantile q (0 < q <= 1), as the middle of its bucket.
func (h *hist) Quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			lo, hi := bucketLow(i), bucketLow(i+1)
			return time.Duration(min(lo+(hi-lo)/2, h.max.Load())) * time.Microsecond
		}
	}
	return h.Max()
}

// Max returns the largest latency recorded.
func (h *hist) Max() time.Duration { return time.Duration(h.max.Load()) * time.Microsecond }

// Mean returns the mean latency.
func (h *hist) Mean() time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	return time.Duration(h.sum.Load()/n) * time.Microsecond
}
