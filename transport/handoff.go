package transport

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferryrt/ferry/transport/internal/netpoll"
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
//
// Words, as this package uses them: a connection is taken over (PollHandler, pollConn) when
// the long-polling handler serves its later requests itself; it is given back (give,
// pollConn.giveBack) when it returns to net/http through this listener; it is parked
// (park) when it waits for its next request with no goroutine, after a negotiation. A
// stream or a held poll that outlives its handler is counted by Config.outliveHandler.
type Handoff struct {
	ch     chan net.Conn
	done   chan struct{}
	once   sync.Once
	served atomic.Bool

	mu     sync.Mutex
	parked map[*parkedConn]struct{} // see park; nil once closed
}

// NewHandoff returns an open Handoff.
func NewHandoff() *Handoff {
	return &Handoff{ch: make(chan net.Conn), done: make(chan struct{}), parked: make(map[*parkedConn]struct{})}
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

// Close stops Accept; connections handed back from now on are closed, and so are the
// parked ones.
func (l *Handoff) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.mu.Lock()
		parked := l.parked
		l.parked = nil
		l.mu.Unlock()
		for pc := range parked {
			pc.end(false)
		}
	})
	return nil
}

// parkedConn is a keep-alive connection between two requests, held by park.
type parkedConn struct {
	l     *Handoff
	c     net.Conn
	mu    sync.Mutex
	ended bool
	watch *netpoll.Watch
	timer *time.Timer
}

// park holds c, a keep-alive connection whose last response was written in full and whose
// next request has not begun, without a goroutine or buffers: held by net/http, such a
// connection keeps its serve goroutine and a 4 KiB reader and writer until the next
// request (a client that negotiated and then opened its WebSocket elsewhere may keep it
// idle for minutes; in a reconnect storm, thousands wait so at once). The poller reports
// the next request, or the client closing, and the connection goes back to net/http
// then; without either within idle, or when l closes, it is closed, as net/http closes an
// idle connection. It reports false, having done nothing, if the poller can't watch c.
func (l *Handoff) park(c net.Conn, idle time.Duration) bool {
	pc := &parkedConn{l: l, c: c}
	pc.mu.Lock()
	defer pc.mu.Unlock()
	l.mu.Lock()
	if l.parked == nil {
		l.mu.Unlock()
		return false
	}
	l.parked[pc] = struct{}{}
	l.mu.Unlock()
	// The watch starts armed and may call at once: that call waits for pc.mu.
	w, err := netpoll.StartFunc(c, func() { pc.end(true) }, nil)
	if err != nil {
		pc.ended = true // for Close, which may be waiting for pc.mu
		l.mu.Lock()
		delete(l.parked, pc)
		l.mu.Unlock()
		return false
	}
	pc.watch = w
	pc.timer = time.AfterFunc(idle, func() { pc.end(false) })
	return true
}

// end stops watching a parked connection, once, and gives it back to net/http or closes
// it.
func (pc *parkedConn) end(giveBack bool) {
	pc.mu.Lock()
	if pc.ended {
		pc.mu.Unlock()
		return
	}
	pc.ended = true
	pc.watch.Stop()
	pc.timer.Stop()
	pc.mu.Unlock()
	pc.l.mu.Lock()
	if pc.l.parked != nil {
		delete(pc.l.parked, pc)
	}
	pc.l.mu.Unlock()
	if giveBack {
		pc.l.give(pc.c)
	} else {
		pc.c.Close()
	}
}

// parkedCount is how many connections are parked now.
func (l *Handoff) parkedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.parked)
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
