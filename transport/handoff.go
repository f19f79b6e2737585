package transport

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Handoff is a net.Listener of the connections the long-polling handler took over and
// gives back to net/http. It lets a keep-alive connection that carries polls be served
// without net/http's per-connection state (see PollHandler), while any other request that
// comes on it (an upstream POST, a preflight, a page) is still served by the server with
// all of its handlers: the connection is handed back, with the bytes read ahead, through
// this listener.
//
// Serve it with the http.Server that serves the transports, beside the server's own
// listener:
//
//	go hs.Serve(handoff)
//
// Until its Accept is first called, polls are served by net/http alone. Close (which
// http.Server.Shutdown calls) closes every connection handed back after it.
type Handoff struct {
	ch     chan net.Conn
	done   chan struct{}
	once   sync.Once
	served atomic.Bool
}

// NewHandoff returns an open Handoff.
func NewHandoff() *Handoff {
	return &Handoff{ch: make(chan net.Conn), done: make(chan struct{})}
}

// Accept returns the next connection handed back.
func (l *Handoff) Accept() (net.Conn, error) {
	l.served.Store(true)
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops Accept; connections handed back from now on are closed.
func (l *Handoff) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr names the listener; it has no address of its own.
func (l *Handoff) Addr() net.Addr { return handoffAddr{} }

type handoffAddr struct{}

func (handoffAddr) Network() string { return "handoff" }
func (handoffAddr) String() string  { return "handoff" }

// Serving reports whether connections are taken over now: Accept has been called and
// Close has not. A server (or a test) that must know the take-over is on before its first
// poll waits for it.
func (l *Handoff) Serving() bool { return l.open() }

// open reports whether connections can be handed back: the listener is served and not
// closed.
func (l *Handoff) open() bool {
	if l == nil || !l.served.Load() {
		return false
	}
	select {
	case <-l.done:
		return false
	default:
		return true
	}
}

// give hands c back to net/http, or closes it once the listener is closed.
func (l *Handoff) give(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		c.Close()
	}
}

// prefixConn is a connection whose first bytes were read already: Read returns them
// before reading from the connection. headerBy, if set, is when the header of the request
// those bytes begin is due: it caps the first read deadline net/http sets (its
// ReadHeaderTimeout for that request), which would otherwise count from the hand-back.
type prefixConn struct {
	net.Conn
	buf      []byte
	headerBy time.Time
}

func (c *prefixConn) SetReadDeadline(t time.Time) error {
	if !c.headerBy.IsZero() {
		if t.IsZero() || t.After(c.headerBy) {
			t = c.headerBy
		}
		c.headerBy = time.Time{}
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *prefixConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetDeadline(t); err != nil {
		return err
	}
	return c.SetReadDeadline(t)
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.buf) > 0 {
		n := copy(b, c.buf)
		c.buf = c.buf[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}
