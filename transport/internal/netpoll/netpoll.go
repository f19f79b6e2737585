// Package netpoll tells when an idle connection becomes readable without a goroutine
// blocked in Read for each one.
//
// A WebSocket or an SSE stream spends nearly all its life waiting for the client, and a
// goroutine parked in Read for every one of them costs its stack: 4 to 8 KiB each, most of
// the memory of an idle connection. A Watch asks the kernel instead (epoll on Linux, one
// instance and one goroutine per process while anything is watched), and starts a
// goroutine only when there is something to read.
//
// A Watch is one-shot: after the callback has run, nothing more is reported until Arm is
// called again. The callback reads what it needs through the connection itself (the Go
// runtime's own poller still serves those reads, so reads may block as usual) and re-arms
// when the connection has nothing buffered.
package netpoll

import (
	"errors"
	"net"
)

// ErrUnsupported is returned by Watch where the platform or the connection can't be
// watched (not Linux, or a connection without a file descriptor of its own, such as a TLS
// connection whose records are buffered above the socket). Callers fall back to a reader
// goroutine.
var ErrUnsupported = errors.New("netpoll: connection can't be watched")

// Watch reports the readability of one connection. Its methods are safe for concurrent
// use.
type Watch struct {
	w *watch
}

// Start watches c and calls onReadable on a new goroutine when c is readable (data, the
// peer's FIN, or an error). The watch starts armed.
func Start(c net.Conn, onReadable func()) (*Watch, error) {
	return StartFunc(c, onReadable, nil)
}

// StartFunc is Start with run starting each onReadable call instead of a new goroutine;
// run is called with the poller's lock held, so it must only hand the call on (to a
// worker pool's queue). Nil run means a new goroutine.
func StartFunc(c net.Conn, onReadable func(), run func(func())) (*Watch, error) {
	w, err := start(c, onReadable, run)
	if err != nil {
		return nil, err
	}
	return &Watch{w: w}, nil
}

// Arm asks for the next call of onReadable. It must be called only from onReadable (or
// after Start), when the caller has read everything it had buffered; if the connection
// is readable already, the call comes at once. Arm reports false once the watch is
// stopped: the caller then owns the connection's reading.
func (w *Watch) Arm() bool { return w.w.arm() }

// Stop ends the watch; the connection can then be closed. It reports whether the watch
// was armed, that is, whether no onReadable call is running or due: if so, the caller
// owns the connection's reading from now on; if not, the running call will find Arm
// false and own it.
func (w *Watch) Stop() bool { return w.w.stop() }

// Peek tells what made a watched connection readable without reading it: data waiting
// (data), or the peer's FIN or an error (closed); neither when nothing is there any more.
// It must not race with a Read of c.
func Peek(c net.Conn) (data, closed bool) { return peek(c) }

// ErrWouldBlock is returned by TryRead when nothing can be read without waiting.
var ErrWouldBlock = errors.New("netpoll: would block")

// TryRead reads what c has buffered in the kernel, without waiting: ErrWouldBlock when
// there is nothing, io.EOF once the peer has closed. It bypasses c's deadlines and must
// not race with other reads of c.
func TryRead(c net.Conn, b []byte) (int, error) { return tryRead(c, b) }

// TryWrite writes what the kernel takes of b without waiting and returns how much that
// was (possibly 0, with a nil error). It never waits for c's write deadline, but fails
// once that has passed, as every write of c does (set one before writing). It must not
// race with other writes of c. A writer of many batches to one connection uses a Writer,
// which allocates nothing per write.
func TryWrite(c net.Conn, b []byte) (int, error) { return tryWrite(c, b) }

// Writer makes TryWrite's writes to one connection without allocating for each: it takes
// the connection's descriptor access at its first write and keeps it, in itself: a
// Writer that is a field of a connection's state adds no object of its own to what a
// write touches (with ten thousand connections written in turn, each is a cache miss).
// Its zero value is ready, and it must not be copied after its first write; its writes
// must not race with each other or with other writes of the connection, and all must be
// to the same connection.
type Writer struct{ w writer }

// TryWrite is TryWrite(c, b); c must be the connection of every earlier call.
func (w *Writer) TryWrite(c net.Conn, b []byte) (int, error) {
	if !w.w.ready() {
		if err := w.w.init(c); err != nil {
			return 0, err
		}
	}
	return w.w.tryWrite(b)
}

// Reader makes TryRead's reads of one connection without allocating for each, as Writer
// does for writes. Its zero value is ready, and it must not be copied after its first
// read; its reads must not race with each other or with other reads of the connection,
// and all must be of the same connection.
type Reader struct{ r reader }

// TryRead is TryRead(c, b); c must be the connection of every earlier call.
func (r *Reader) TryRead(c net.Conn, b []byte) (int, error) {
	if !r.r.ready() {
		if err := r.r.init(c); err != nil {
			return 0, err
		}
	}
	return r.r.tryRead(b)
}

// Supported reports whether connections can be watched here at all (Linux, with epoll
// available); a particular connection may still be refused by Start.
func Supported() bool { return supported() }
