package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"syscall"
	"time"
)

// dialer opens the generator's TCP connections. Against a loopback server it spreads
// them over the source addresses 127.0.0.2, 127.0.0.3, ...: a bound source address gets
// its port from the ephemeral range alone (about 28,000 ports), which a run of ten
// thousand clients repeated a few times would exhaust from one address. Client i always
// uses the same address, as a real client has one, so that a server's per-address
// limits count it once.
type dialer struct {
	sources int // 0: let the kernel choose
	timeout time.Duration
}

// source returns the source address of client i, nil for the kernel's choice.
func (d *dialer) source(i int) *net.TCPAddr {
	if d.sources <= 0 {
		return nil
	}
	// 127.0.0.2 upwards; 127.0.0.1 is left to the server and the publisher.
	n := 2 + i%d.sources
	return &net.TCPAddr{IP: net.IPv4(127, byte(n>>16), byte(n>>8), byte(n))}
}

// DialContext opens a connection to addr from laddr (nil: any). A positive rcvbuf
// shrinks the socket's receive buffer before the handshake, so that a client that stops
// reading fills it (and the server's send buffer) after a few messages rather than
// after megabytes.
func (d *dialer) DialContext(ctx context.Context, network, addr string, laddr *net.TCPAddr, rcvbuf int) (net.Conn, error) {
	nd := net.Dialer{Timeout: d.timeout}
	if laddr != nil {
		nd.LocalAddr = laddr
	}
	if rcvbuf > 0 {
		nd.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	return nd.DialContext(ctx, network, addr)
}

// loopback reports whether host names this machine over IPv4, where 127.0.0.0/8 is
// ours to use as source addresses.
func loopback(host string) bool {
	ip := net.ParseIP(host)
	if host == "localhost" {
		return true
	}
	return ip != nil && ip.To4() != nil && ip.IsLoopback()
}

// httpConn is one keep-alive HTTP/1.1 connection used by one client at a time, for the
// polling transports and SSE. Owning its connection keeps a client's cost to one
// goroutine and one socket: net/http's Transport would add two goroutines per
// connection and a pool lookup per request, which at tens of thousands of polls per
// second makes the generator, not the server, the bottleneck. Requests on it are strictly
// sequential, which is what long-polling does anyway.
type httpConn struct {
	ctx    context.Context // cancelling it fails the request in flight
	d      *dialer
	addr   string // host:port
	host   string // Host header
	laddr  *net.TCPAddr
	rcvbuf int
	conn   net.Conn
	stop   func() bool // unregisters the ctx watch of conn
	br     *bufio.Reader
	wbuf   []byte
	// redials counts the requests that found the kept-alive connection closed and were
	// answered on a new one, as a browser's are without telling the page.
	redials int
}

func newHTTPConn(ctx context.Context, d *dialer, u *url.URL, laddr *net.TCPAddr, rcvbuf int) *httpConn {
	return &httpConn{ctx: ctx, d: d, addr: hostPort(u), host: u.Host, laddr: laddr, rcvbuf: rcvbuf}
}

func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	if u.Scheme == "https" || u.Scheme == "wss" {
		return u.Host + ":443"
	}
	return u.Host + ":80"
}

// Do sends one request (GET when body is nil) and returns the status and the whole
// body, reconnecting once if the kept-alive connection turns out to be closed. deadline
// bounds the whole exchange.
func (c *httpConn) Do(method, pathQuery string, hdr map[string]string, body []byte, deadline time.Time) (int, []byte, error) {
	for attempt := 0; ; attempt++ {
		fresh := c.conn == nil
		if fresh {
			if err := c.dial(); err != nil {
				return 0, nil, err
			}
		}
		status, b, err := c.roundTrip(method, pathQuery, hdr, body, deadline)
		if err == nil {
			if attempt > 0 {
				c.redials++
			}
			return status, b, nil
		}
		c.Close()
		// A kept-alive connection the server closed meanwhile fails at once: retry on a
		// new one. A failure on a fresh connection is real.
		if fresh || attempt > 0 || c.ctx.Err() != nil {
			return 0, nil, err
		}
	}
}

// Stream sends a GET and returns the response with its body still to read (an event
// stream). The connection then belongs to the body until Close.
func (c *httpConn) Stream(pathQuery string, hdr map[string]string) (*http.Response, error) {
	// The stream goes on the kept-alive connection if there is one (the negotiation's),
	// as a browser's would: a second connection would hold a server goroutine for nothing.
	if c.conn == nil {
		if err := c.dial(); err != nil {
			return nil, err
		}
	}
	if err := c.setDeadline(time.Now().Add(c.d.timeout)); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.writeRequest(http.MethodGet, pathQuery, hdr, nil); err != nil {
		c.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	if err := c.setDeadline(time.Time{}); err != nil {
		c.Close()
		return nil, err
	}
	return resp, nil
}

func (c *httpConn) dial() error {
	conn, err := c.d.DialContext(c.ctx, "tcp", c.addr, c.laddr, c.rcvbuf)
	if err != nil {
		return err
	}
	c.conn = conn
	c.stop = context.AfterFunc(c.ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	if c.br == nil {
		c.br = bufio.NewReaderSize(conn, 4096)
	} else {
		c.br.Reset(conn)
	}
	return nil
}

func (c *httpConn) writeRequest(method, pathQuery string, hdr map[string]string, body []byte) error {
	b := c.wbuf[:0]
	b = fmt.Appendf(b, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, pathQuery, c.host)
	for k, v := range hdr {
		b = fmt.Appendf(b, "%s: %s\r\n", k, v)
	}
	if body != nil {
		b = fmt.Appendf(b, "Content-Length: %d\r\n", len(body))
	}
	b = append(b, "\r\n"...)
	b = append(b, body...)
	c.wbuf = b
	_, err := c.conn.Write(b)
	return err
}

// setDeadline sets the connection's deadline unless ctx is already done (whose watch
// has set a deadline in the past that must stay).
func (c *httpConn) setDeadline(t time.Time) error {
	c.conn.SetDeadline(t)
	return c.ctx.Err()
}

func (c *httpConn) roundTrip(method, pathQuery string, hdr map[string]string, body []byte, deadline time.Time) (int, []byte, error) {
	if err := c.setDeadline(deadline); err != nil {
		return 0, nil, err
	}
	if err := c.writeRequest(method, pathQuery, hdr, body); err != nil {
		return 0, nil, err
	}
	status, b, closing, err := readResponse(c.br, method)
	if err != nil {
		return 0, nil, err
	}
	if closing {
		c.Close()
	}
	return status, b, nil
}

// readResponse reads one response to a request of method: its status, its whole body and
// whether the server closes the connection after it. It reads only what a client of these
// servers needs (Content-Length, chunked bodies, Connection: close), without the header
// map of http.ReadResponse: the generator shares a core with thousands of clients, and
// what it spends per response shows in every latency it measures, for every server alike.
func readResponse(br *bufio.Reader, method string) (status int, body []byte, closing bool, err error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, nil, false, err
	}
	if len(line) < len("HTTP/1.1 200") || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, nil, false, fmt.Errorf("bad status line %.60q", line)
	}
	if status, err = strconv.Atoi(string(line[9:12])); err != nil {
		return 0, nil, false, fmt.Errorf("bad status line %.60q", line)
	}
	closing = line[7] == '0' // HTTP/1.0 closes unless it says otherwise; none here does
	length, chunked := -1, false
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return 0, nil, false, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return 0, nil, false, fmt.Errorf("bad header line %.60q", line)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil || length < 0 {
				return 0, nil, false, fmt.Errorf("bad Content-Length %.30q", value)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			closing = bytes.EqualFold(value, []byte("close"))
		}
	}
	switch {
	case method == http.MethodHead || status == http.StatusNoContent || status == http.StatusNotModified || status < 200:
		return status, nil, closing, nil
	case chunked:
		if body, err = io.ReadAll(httputil.NewChunkedReader(br)); err == nil {
			// The last chunk is followed by trailers, if any, and an empty line.
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return 0, nil, false, err
				}
				if len(bytes.TrimRight(line, "\r\n")) == 0 {
					break
				}
			}
		}
	case length >= 0:
		body = make([]byte, length)
		_, err = io.ReadFull(br, body)
	default:
		body, err = io.ReadAll(br) // to the end of the connection
		closing = true
	}
	return status, body, closing, err
}

// Close closes the connection; the next request opens a new one.
func (c *httpConn) Close() {
	if c.conn != nil {
		c.stop()
		c.conn.Close()
		c.conn = nil
	}
}
