package transport

import (
	"bufio"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferryrt/ferry/session"
	"github.com/ferryrt/ferry/transport/internal/netpoll"
)

// corkConn lets a WebSocket writer send a whole batch of frames in one write: between
// cork and uncork, writes are gathered in a buffer (lent by corkPool for that time only).
// gorilla/websocket writes every message with its own write; one syscall per frame is
// what a fan-out burst otherwise costs per subscriber and frame.
type corkConn struct {
	net.Conn
	guard  *closeGuard // reads go through it (wsclose.go)
	mu     sync.Mutex
	corked bool
	buf    *[]byte
	// closeSent: a close frame went through Write (see appendFrames).
	closeSent bool
	wd        coarseDeadline // gorilla sets a deadline before every frame it writes
	tw        netpoll.Writer // uncorkTry's writes (under mu)
}

// SetWriteDeadline applies t, coarsely when it extends a deadline still ahead.
func (c *corkConn) SetWriteDeadline(t time.Time) error { return c.wd.set(c.Conn, t) }

// coarseDeadline sets a connection's write deadline for writers that set one before every
// write: moving the runtime's timer for each is a measurable part of a fan-out, so a later
// deadline is applied only once it moves by a quarter of writeWait (a write stays bounded
// by 3/4 to 1 writeWait). An earlier one is always applied (that is how a close cuts a
// stuck write), and so is any after a deadline has passed (the close frame that follows
// the cut gets its own second). Its lock is its own, not the writer's, which a blocked
// write may hold: a close must get through then.
//
// A non-blocking write (netpoll.TryWrite) never waits, so it needs no deadline of its
// own; but the runtime fails any write, raw ones included, once the connection's deadline
// has passed, and one left by a blocking write (a pong, the rest of a batch) passes a
// writeWait later. keep moves such a deadline ahead before a non-blocking write. Every
// deadline of a connection that writes with keep must be set through set, or keep can't
// see it.
type coarseDeadline struct {
	mu sync.Mutex
	t  time.Time // the deadline last set on the connection
	// isSet: a deadline is set on the connection (t is not zero), for keep to read without
	// the lock.
	isSet atomic.Bool
}

func (d *coarseDeadline) set(c net.Conn, t time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !t.IsZero() && t.After(d.t) && t.Sub(d.t) < writeWait()/4 && d.t.After(time.Now()) {
		return nil
	}
	d.t = t
	d.isSet.Store(!t.IsZero())
	return c.SetWriteDeadline(t)
}

// keep makes sure a deadline set on c earlier is still ahead, for a non-blocking write:
// one a writeWait from now (coarsely, as set). Where none was set, the usual case for a
// pooled connection between blocking writes, it costs an atomic load.
func (d *coarseDeadline) keep(c net.Conn) error {
	if !d.isSet.Load() {
		return nil
	}
	return d.set(c, time.Now().Add(writeWait()))
}

// Read reads through the close guard: every byte gorilla sees has passed it.
func (c *corkConn) Read(p []byte) (int, error) { return c.guard.Read(p) }

// maxCork bounds what a corked connection gathers before it writes anyway.
const maxCork = 64 << 10

var corkPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(p) >= 2 && p[0] == wsFin|wsOpClose && int(p[1]) == len(p)-2 {
		c.closeSent = true // see appendFrames
	}
	if !c.corked {
		return c.Conn.Write(p)
	}
	if len(*c.buf)+len(p) > maxCork {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > maxCork {
			return c.Conn.Write(p)
		}
	}
	*c.buf = append(*c.buf, p...)
	return len(p), nil
}

// appendFrames frames out as text messages into the gathered bytes, each ping frame of
// the heartbeat followed by a WebSocket ping (what the client's browser answers), in one
// copy of each payload (appendServerFrame) where gorilla's WriteMessage makes two and
// keeps books around them. The connection must be corked. Nothing is appended once a
// close frame has gone through Write: after the close, nothing may follow (RFC 6455
// §5.5.1), which gorilla enforced for its own writes (ErrCloseSent) and the cork now
// enforces for these.
//
// gorilla still writes control frames on the connection, and one of them may be the
// close it sends by itself when a client breaks the protocol, from the reader, at any
// moment. Write recognises a close frame by its first two bytes, which is exact only if
// every write through the cork is a whole frame: gorilla's WriteControl makes one Write
// of a whole control frame, but WriteMessage writes a large message in two parts. So a
// connection that uses appendFrames must frame all its data messages with it (the pooled
// WebSocket writer: wsSession.framed).
func (c *corkConn) appendFrames(out []session.Outgoing) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeSent {
		return
	}
	b := *c.buf
	for _, o := range out {
		b = appendServerFrame(b, wsOpText, o.JSON)
		if o.Kind == session.KindPing {
			b = appendServerFrame(b, wsOpPing, nil)
		}
	}
	*c.buf = b
}

func (c *corkConn) flushLocked() error {
	if len(*c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(*c.buf)
	*c.buf = (*c.buf)[:0]
	return err
}

func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.buf = corkPool.Get().(*[]byte)
	c.mu.Unlock()
}

// uncork writes what was gathered.
func (c *corkConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.flushLocked()
	c.corked = false
	if cap(*c.buf) <= maxCork {
		corkPool.Put(c.buf)
	}
	c.buf = nil
	return err
}

// uncorkTry writes what was gathered without waiting, and returns what the kernel didn't
// take, for WriteRest (wsSession's, off the pool). A deadline left by a blocking write (a
// pong gorilla wrote, the rest of a batch) is kept ahead first: the write honours it.
func (c *corkConn) uncorkTry() (rest []byte, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := *c.buf
	n := 0
	if err = c.wd.keep(c.Conn); err == nil {
		n, err = c.tw.TryWrite(c.Conn, b)
	}
	if err == nil && n < len(b) {
		rest = append([]byte(nil), b[n:]...)
	}
	c.corked = false
	if cap(*c.buf) <= maxCork {
		*c.buf = b[:0]
		corkPool.Put(c.buf)
	}
	c.buf = nil
	return rest, err
}

// writeRest writes the rest of a batch, waiting up to writeWait; nothing else is written
// in between (a pong from the reader waits).
func (c *corkConn) writeRest(rest []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.SetWriteDeadline(time.Now().Add(writeWait()))
	_, err := c.Conn.Write(rest)
	return err
}

// corkHijacker hands gorilla's Upgrade a corkConn in place of the hijacked connection,
// and a read buffer of wsReadBuffer bytes in place of net/http's 4 KiB one.
//
// The pooled reader (wsSession.readPolled) relies on gorilla reading every frame through
// that buffer, and holding no buffer of its own: whatever sits in a buffer it can't see
// would never be announced by the poller again. gorilla's Upgrade does so when
// Upgrader.ReadBufferSize is zero and the hijacked reader holds more than 256 bytes: it
// resets that reader onto the connection and keeps it. This is how gorilla behaves
// (v1.5.3, server.go), not what it documents; TestGorillaReadsThroughHijackedReader
// fails if it changes. This is the one place the package depends on it; the plain I/O
// mode does not (Config.IO).
type corkHijacker struct {
	http.ResponseWriter
	conn  *corkConn
	guard *closeGuard   // under conn's reads: see wsclose.go
	br    *bufio.Reader // nil if net/http had read past the request: gorilla refuses that
}

// wsReadBuffer holds a client's small frames whole; larger ones are read through it.
const wsReadBuffer = 512

func (h *corkHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// gorilla reads through Read of the conn it is given (it resets the hijacked reader
	// onto it), so the close guard goes there.
	h.guard = newCloseGuard(c)
	h.conn = &corkConn{Conn: c, guard: h.guard}
	if brw.Reader.Buffered() > 0 {
		return h.conn, brw, nil
	}
	h.br = bufio.NewReaderSize(h.conn, wsReadBuffer)
	return h.conn, bufio.NewReadWriter(h.br, brw.Writer), nil
}
