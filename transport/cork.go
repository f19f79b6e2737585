package transport

import (
	"bufio"
	"net"
	"net/http"
	"sync"
)

// corkConn lets a WebSocket writer send a whole batch of frames in one write: between
// cork and uncork, writes are gathered in a buffer (lent by corkPool for that time only).
// gorilla/websocket writes every message with its own write; one syscall per frame is
// what a fan-out burst otherwise costs per subscriber and frame.
type corkConn struct {
	net.Conn
	mu     sync.Mutex
	corked bool
	buf    *[]byte
}

// maxCork bounds what a corked connection gathers before it writes anyway.
const maxCork = 64 << 10

var corkPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
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

// corkHijacker hands gorilla's Upgrade a corkConn in place of the hijacked connection,
// and a read buffer of wsReadBuffer bytes in place of net/http's 4 KiB one (gorilla
// reuses a hijacked reader larger than 256 bytes when its ReadBufferSize is zero).
type corkHijacker struct {
	http.ResponseWriter
	conn *corkConn
	br   *bufio.Reader // nil if net/http had read past the request: gorilla refuses that
}

// wsReadBuffer holds a client's small frames whole; larger ones are read through it.
const wsReadBuffer = 512

func (h *corkHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	h.conn = &corkConn{Conn: c}
	if brw.Reader.Buffered() > 0 {
		return h.conn, brw, nil
	}
	h.br = bufio.NewReaderSize(h.conn, wsReadBuffer)
	return h.conn, bufio.NewReadWriter(h.br, brw.Writer), nil
}
