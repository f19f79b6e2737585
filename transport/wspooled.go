package transport

// The pooled I/O of a WebSocket session (Config.IO, IOPooled): reading what the poller
// reports without waiting for more, and writing on the handler's pool without waiting on
// the network (DESIGN invariant 11: pool tasks never wait on the network). The plain path
// of websocket.go does both with goroutines that may block; the conformance suite and the
// bridge tests run both.

import (
	"errors"
	"runtime"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ferryrt/ferry/session"
)

// wsWriters bounds the pool that writes to WebSocket clients. A write there never waits
// (what the kernel doesn't take at once is finished on a goroutine of the session's own),
// so a few workers per core keep the cores busy; more would only take turns with them,
// and with everything else the process must do (the publish that starts the next
// fan-out among it).
var wsWriters = 2*runtime.GOMAXPROCS(0) + 2

// wsTryBytes is the largest batch a pool worker writes; a larger one (or the close) is
// written by a goroutine of its own, which may wait.
const wsTryBytes = 32 << 10

// readPolled runs on a goroutine of its own when the client has sent something. It
// handles what has arrived and reports whether to wait for the next report (false: the
// attachment is over, reading ends). Pings and pongs are handled here (see wsframe.go):
// only a data message is read through gorilla, which blocks until the message is whole.
func (s *wsSession) readPolled() bool {
	// Readable: this fill returns what the kernel has (or the end) without waiting. It
	// asks for one byte more than is buffered, which is at most a control frame's start.
	// A close frame not whole yet is left to the next report, like a ping.
	s.guard.nonblock = true
	_, err := s.br.Peek(s.br.Buffered() + 1)
	s.guard.nonblock = false
	if err != nil && err != errCloseIncomplete {
		s.a.Close(readError(err))
		return false
	}
	for s.br.Buffered() > 0 {
		head, _ := s.br.Peek(s.br.Buffered())
		kind, f := peekFrame(head)
		if kind == peekPartial {
			break // the rest of a ping or pong comes with the next report
		}
		if kind == peekControl {
			s.br.Discard(f.size)
			s.touch()
			if f.op == wsOpPing {
				// As gorilla's own ping handler: a failed pong shows on the next write.
				s.conn.WriteControl(websocket.PongMessage, f.payload, time.Now().Add(writeWait))
			}
			continue
		}
		if !s.readOne() {
			return false
		}
	}
	if err := s.guard.Err(); err != nil && s.br.Buffered() == 0 {
		// The client's close came behind what was just handled: no report will follow,
		// the guard has read it off the socket.
		s.a.Close(readError(err))
		return false
	}
	return true
}

// drainPooled is the writer's loop on a pool worker, whose time is shared: it never
// waits. A batch goes out with one non-blocking write, and the writer moves to a
// goroutine of its own (offPool) before anything that could wait: a history read, the
// rest of a write the kernel didn't take, a large batch, the close.
func (s *wsSession) drainPooled() {
	for {
		out, err := s.a.TryNextLocal()
		switch {
		case errors.Is(err, session.ErrNeedsSource):
			s.offPool(nil) // a history read (a new channel, a gap) waits on the store
			return
		case err != nil:
			s.finish()
			return
		case len(out) == 0:
			return // idle: the next frame wakes a new writer
		case !tryable(out):
			s.offPool(func() bool { return s.write(out) })
			return
		}
		rest, ok := s.writeNow(out)
		if !ok {
			s.finish()
			return
		}
		if rest != nil {
			s.offPool(func() bool { return s.writeRest(rest) })
			return
		}
	}
}

// offPool moves the writer to a goroutine of its own, which may wait: it runs first (if
// set; false ends the writing) and then drains as the plain writer does.
func (s *wsSession) offPool(first func() bool) {
	go func() {
		if first != nil && !first() {
			s.finish()
			return
		}
		s.drain(false)
	}()
}

// writeRest writes what the kernel didn't take of a batch, waiting, and reports whether
// the connection goes on.
func (s *wsSession) writeRest(rest []byte) bool {
	if err := s.cork.writeRest(rest); err != nil {
		s.a.Close(&session.Error{Code: session.CodeAbnormal, Reason: "write failed"})
		return false
	}
	return true
}

// tryable reports whether a batch can be written by a pool worker: small, and without the
// close frame (whose handshake waits).
func tryable(out []session.Outgoing) bool {
	n := 0
	for _, o := range out {
		if o.Kind == session.KindClose {
			return false
		}
		n += len(o.JSON) + 16 // the frame header, a ping's own WebSocket ping
	}
	return n <= wsTryBytes
}

// writeNow writes a batch (see tryable) corked, with one non-blocking write, and returns
// what the kernel didn't take.
func (s *wsSession) writeNow(out []session.Outgoing) (rest []byte, ok bool) {
	s.sent(out)
	// gorilla applies its own write deadline to every frame it writes, into the cork's
	// buffer too. One left from an earlier blocking write (write sets it) has passed by
	// now, and the non-blocking write below honours it: every batch would fail.
	s.conn.SetWriteDeadline(time.Now().Add(writeWait))
	s.cork.cork()
	for _, o := range out {
		// Into the cork's buffer: these don't reach the connection.
		s.conn.WriteMessage(websocket.TextMessage, o.JSON)
		if o.Kind == session.KindPing {
			s.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait))
		}
	}
	rest, err := s.cork.uncorkTry()
	if err != nil {
		s.a.Close(&session.Error{Code: session.CodeAbnormal, Reason: "write failed"})
		return nil, false
	}
	return rest, true
}
