package transport

// The pooled I/O of a WebSocket session (Config.IO, IOPooled): reading what the poller
// reports without waiting for more, and writing on the writers' pool without waiting on
// the network (DESIGN invariant 11: pool tasks never wait on the network): the Try and
// WriteRest that stream.Writer calls there and off the pool. The plain path of
// websocket.go does both with goroutines that may block; the conformance suite and the
// bridge tests run both.

import (
	"time"

	"github.com/gorilla/websocket"

	"github.com/ferryrt/ferry/session"
)

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
				s.conn.WriteControl(websocket.PongMessage, f.payload, time.Now().Add(writeWait()))
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

// writeFramed is Write for a pooled connection, off the pool: the batch framed into the
// cork as Try frames it (so that gorilla writes no data frame on the connection, see
// corkConn.appendFrames), the close frame through gorilla, then one write that may wait.
func (s *wsSession) writeFramed(out []session.Outgoing) bool {
	end := len(out)
	for i, o := range out {
		if o.Kind == session.KindClose {
			end = i
			break
		}
	}
	// gorilla's deadline (Write sets it) is not the connection's: gorilla applies it only
	// to what it writes itself.
	s.cork.SetWriteDeadline(time.Now().Add(writeWait()))
	s.cork.cork()
	s.cork.appendFrames(out[:end])
	if end < len(out) {
		writeClose(s.conn, s.a.Err())
	}
	if err := s.cork.uncork(); err != nil {
		writeFailed(s.a)
		return false
	}
	return end == len(out)
}

// MayWait reports whether a batch may wait (see batchMayWait): the writer writes it off
// the pool. 16 bytes a frame: its header, a ping's own WebSocket ping.
func (s *wsSession) MayWait(out []session.Outgoing) bool { return batchMayWait(out, 16) }

// WriteRest writes what the kernel didn't take of a batch, waiting, and reports whether
// the connection goes on.
func (s *wsSession) WriteRest(rest []byte) bool {
	if err := s.cork.writeRest(rest); err != nil {
		writeFailed(s.a)
		return false
	}
	return true
}

// Try writes a batch on a pool worker (one MayWait refused) corked, with one non-blocking
// write, and returns what the kernel didn't take.
func (s *wsSession) Try(out []session.Outgoing) (rest []byte, ok bool) {
	s.sent(out)
	// gorilla's own deadline (Conn.SetWriteDeadline) needs no care here: it applies only
	// to the data frames gorilla writes, and a pooled connection frames its own. The
	// connection's is uncorkTry's.
	s.cork.cork()
	s.cork.appendFrames(out) // what the plain mode's WriteMessage calls write, framed once
	rest, err := s.cork.uncorkTry()
	if err != nil {
		writeFailed(s.a)
		return nil, false
	}
	return rest, true
}
