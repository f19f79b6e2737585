// Package stream owns the I/O of a long-lived connection (a WebSocket, an SSE stream) in
// both of the transports' I/O modes: its reading (Reader), its writing (Writer), and the
// one decision of which goroutine tears it down. A transport gives it what to do with
// what arrives (handle), what to do when reading is over (ended), and where its batches
// come from and how they are written (Batches); the netpoll watch and its arming, the
// wake-ups of the writer, the choice between a pool worker and a goroutine of its own,
// and the question of who owns the connection when the writer stops the reading stay in
// here.
//
// Pooled, the connection holds no goroutine while idle: the kernel reports readability
// (netpoll) and handle runs on a goroutine of its own only then; a writer is a task of
// a worker pool, only while there is something to write, and never waits on the network.
// Plain (the goroutine-per-connection twin, and the fallback where the socket can't be
// watched, as over TLS), one goroutine calls handle in a loop, blocking in Read, and
// every wake-up of the writer is a goroutine that may block in Write.
package stream

import (
	"net"
	"sync"

	"github.com/ferryrt/ferry/transport/internal/netpoll"
)

// Reader owns the reading of one connection. The zero value is ready for Start; Stop may
// come before Start.
type Reader struct {
	mu      sync.Mutex
	stopped bool           // Stop was called, or reading ended
	watch   *netpoll.Watch // nil when reading on a goroutine of its own
	handle  func(polled bool) bool
	ended   func()
}

// Start begins reading c. handle reads and handles what the client sent, and reports
// whether reading goes on:
//   - pooled and c can be watched: handle(true) runs on a goroutine of its own each time
//     c is readable; it must leave nothing buffered above the socket (the poller does not
//     see it), and may block only as long as a message that has begun takes to arrive.
//   - otherwise: one goroutine calls handle(false) until it reports false; it may block
//     in Read (Stop does not interrupt it: the caller sets a read deadline or closes c).
//
// When handle reports false, or Stop is called, ended runs once, on the one goroutine
// that owns the reading from then on, never while handle runs; the watch has left the
// poller by then, so c may be closed.
func (r *Reader) Start(c net.Conn, pooled bool, handle func(polled bool) bool, ended func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.handle, r.ended = handle, ended
	if r.stopped {
		go ended() // stopped before it started: only the ending is left
		return
	}
	if pooled {
		// The watch starts armed and may report at once: onReadable then waits for mu
		// before it looks at r.watch.
		if w, err := netpoll.Start(c, r.onReadable); err == nil {
			r.watch = w
			return
		}
	}
	go r.loop()
}

// Watched reports whether the reading is done by the poller (pooled), as opposed to a
// goroutine of its own.
func (r *Reader) Watched() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.watch != nil
}

func (r *Reader) loop() {
	for r.handle(false) {
	}
	r.end()
}

func (r *Reader) onReadable() {
	if r.handle(true) {
		r.mu.Lock()
		w := r.watch
		r.mu.Unlock()
		if w.Arm() {
			return // nothing runs until the next report
		}
		// Stopped meanwhile: the reading is ours to end.
	}
	r.end()
}

// end stops the watch (a descriptor must leave the epoll set before it is closed) and
// runs ended, on the goroutine that owns the reading.
func (r *Reader) end() {
	r.mu.Lock()
	r.stopped = true
	w := r.watch
	r.mu.Unlock()
	if w != nil {
		w.Stop()
	}
	r.ended()
}

// Stop asks the reading to end, as when the writer has sent the last frame. If the
// poller waits for the client with no handle running, ended runs now, on a new
// goroutine; if handle runs, ended runs once it returns; a blocking reader ends when its
// Read fails (the caller's deadline, or c closed).
func (r *Reader) Stop() {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return
	}
	r.stopped = true
	w := r.watch
	r.mu.Unlock()
	if w != nil && w.Stop() {
		go r.ended()
	}
}
