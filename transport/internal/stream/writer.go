package stream

import (
	"errors"
	"sync/atomic"

	"github.com/ferryrt/ferry/transport/internal/workers"
)

// ErrWait is returned by Batches.Next, asked not to wait, when the next batch needs a
// wait (a history read): the Writer then asks again on a goroutine of its own.
var ErrWait = errors.New("stream: the next batch needs a wait")

// Batches is what a transport gives a Writer: where its batches of frames (E) come from
// and how they reach the client. The Writer calls them from one goroutine at a time, in
// order; each method reports false (or Next an error) when writing is over.
type Batches[E any] interface {
	// Next takes the next batch without waiting for one: nil when there is none, which
	// makes the writer idle until the next Wake; an error ends the writing. local asks
	// Next not to wait at all (the caller is a pool worker): it then returns ErrWait
	// where it would wait (a history read), and is asked again with local false.
	Next(local bool) ([]E, error)
	// MayWait reports whether writing b may wait even when the kernel takes every byte
	// (a large batch, a close handshake): a pool worker doesn't write it.
	MayWait(b []E) bool
	// Try encodes b into one buffer and writes it with one non-blocking write; it
	// returns what the kernel didn't take (nil: everything).
	Try(b []E) (rest []byte, ok bool)
	// WriteRest writes what Try left, waiting as long as the write takes.
	WriteRest(rest []byte) bool
	// Write writes b, waiting as long as the write takes.
	Write(b []E) bool
	// Finish ends the writing, once: after Next's error or a write that reported false.
	// No writer runs after it.
	Finish()
}

// Writer owns the writing side of one connection: the wake-ups, which goroutine writes
// and the drain loop, in both of the transports' I/O modes.
//
// A Wake (the attachment has frames, and no writer runs) starts a writer, which drains
// with Next until it returns nothing; a Wake while one runs is remembered, and that
// writer drains once more before it ends: there is never more than one writer, and no
// wake is lost.
//
// Pooled (Start with a pool), the writer is a task of the pool, which must never wait on
// the network (DESIGN invariant 11): it asks Next not to wait, writes a batch with one
// non-blocking write (Try), and moves to a goroutine of its own before anything that may
// wait: a history read (ErrWait), a batch that MayWait, the rest of a write the kernel
// didn't take. It gives its worker up after a bounded turn (writerTurn batches) and
// carries on at the back of the pool's queue. Plain (no pool: the goroutine-per-
// connection twin, and the fallback where writes can't be tried, as over TLS), every
// wake-up starts a goroutine of its own, which writes with Write and may wait.
//
// The zero value holds the wakes that come before Start; a Writer never started (the
// attachment failed) holds no goroutine.
type Writer[E any] struct {
	b     Batches[E]
	pool  *workers.Pool
	state atomic.Int32
}

// Writer states. Only the running writer moves out of running or woken.
const (
	held      int32 = iota // not started, no wake yet
	heldWoken              // not started, woken
	idle                   // started, no writer runs
	running                // a writer runs
	woken                  // a writer runs, and a wake came meanwhile
	finished               // Finish has run
)

// writerTurn bounds the batches a pooled writer writes before it lets the pool's other
// tasks run.
const writerTurn = 16

// Start lets the writer run, on pool's workers (nil: on goroutines of its own), writing
// what b gives; a wake that came before runs now. It is called once.
func (w *Writer[E]) Start(pool *workers.Pool, b Batches[E]) {
	w.b, w.pool = b, pool
	if w.state.CompareAndSwap(held, idle) {
		return
	}
	w.state.Store(running) // heldWoken: a wake came before
	w.run()
}

// Wake asks for a writer: one starts unless one runs already, which then drains again
// before it ends. It never blocks, so it may be called under the attachment's lock.
func (w *Writer[E]) Wake() {
	for {
		switch w.state.Load() {
		case held:
			if w.state.CompareAndSwap(held, heldWoken) {
				return
			}
		case idle:
			if w.state.CompareAndSwap(idle, running) {
				w.run()
				return
			}
		case running:
			if w.state.CompareAndSwap(running, woken) {
				return
			}
		default: // heldWoken, woken: remembered already; finished: nothing to write
			return
		}
	}
}

// run starts the writer, which is marked running.
func (w *Writer[E]) run() {
	if w.pool != nil {
		w.pool.Run((*pooled[E])(w))
	} else {
		go w.drain()
	}
}

// rest marks the writer idle when no wake came since it began; otherwise it takes the
// wake, and reports false: the writer drains again.
func (w *Writer[E]) rest() bool {
	if w.state.CompareAndSwap(running, idle) {
		return true
	}
	w.state.Store(running) // woken: only this writer leaves that state
	return false
}

func (w *Writer[E]) finish() {
	w.state.Store(finished)
	w.b.Finish()
}

// drain is the writer on a goroutine of its own, which may wait.
func (w *Writer[E]) drain() {
	for {
		b, err := w.b.Next(false)
		switch {
		case err != nil:
			w.finish()
			return
		case len(b) == 0:
			if w.rest() {
				return // idle: the next wake starts a writer
			}
		case !w.b.Write(b):
			w.finish()
			return
		}
	}
}

// pooled is a Writer as a task of the pool (workers.Task), queued as itself: no func
// value of its own to reach through.
type pooled[E any] Writer[E]

func (p *pooled[E]) Run() { (*Writer[E])(p).drainPooled() }

// drainPooled is the writer as a task of the pool: it never waits, and hands what may
// wait to a goroutine of its own (offPool).
func (w *Writer[E]) drainPooled() {
	for range writerTurn {
		b, err := w.b.Next(true)
		switch {
		case errors.Is(err, ErrWait):
			go w.offPool(nil, nil)
			return
		case err != nil:
			w.finish()
			return
		case len(b) == 0:
			if w.rest() {
				return // idle: the next wake starts a writer
			}
			continue
		case w.b.MayWait(b):
			go w.offPool(b, nil)
			return
		}
		rest, ok := w.b.Try(b)
		if !ok {
			w.finish()
			return
		}
		if rest != nil {
			go w.offPool(nil, rest)
			return
		}
	}
	w.pool.Run((*pooled[E])(w)) // the turn is over: to the back of the queue
}

// offPool is the pooled writer moved to a goroutine of its own: it writes the rest of a
// write or a batch that may wait, if any, and drains as the plain writer does. The next
// wake-up after it is idle starts on the pool again.
func (w *Writer[E]) offPool(b []E, rest []byte) {
	if (rest != nil && !w.b.WriteRest(rest)) || (b != nil && !w.b.Write(b)) {
		w.finish()
		return
	}
	w.drain()
}
