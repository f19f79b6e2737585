package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/gorilla/websocket"
)

// client is one simulated subscriber. connect returns once the client is subscribed (or
// as subscribed as its protocol can tell); read then receives until the connection ends
// or ctx is done. A stalled client never calls read. close releases everything and may
// be called at any time from any goroutine... except that the run calls it once, after
// ctx is cancelled.
type client interface {
	connect(ctx context.Context) error
	read(ctx context.Context, s *stats) error
	close()
}

// env is what every client of a run shares.
type env struct {
	o      *options
	u      *url.URL   // server base URL (scheme, host): the first of --url
	us     []*url.URL // every node of --url, clients spread over them in turn
	d      *dialer
	wsDial websocket.Dialer
}

func newEnv(o *options) (*env, error) {
	if o.urls == nil {
		if err := o.parseLists(); err != nil {
			return nil, err
		}
	}
	e := &env{o: o, u: o.urls[0], us: o.urls, d: &dialer{timeout: 10 * time.Second}}
	all := true
	for _, u := range o.urls {
		all = all && loopback(u.Hostname())
	}
	if all && o.sources > 0 {
		e.d.sources = o.sources
	}
	e.wsDial = websocket.Dialer{
		HandshakeTimeout: 10 * time.Second,
		// Small buffers: the generator holds ten thousand of these, and frames are small.
		ReadBufferSize:  2048,
		WriteBufferSize: 512,
	}
	return e, nil
}

// newClient returns client i of the run, on node i mod len(--url) and on the channel
// clientChannel gives it; stalled clients stop reading once subscribed.
func (e *env) newClient(i int, stalled bool) client {
	ch := clientChannel(i, e.o.channels, len(e.us))
	cc := clientConf{e: e, u: e.us[i%len(e.us)], laddr: e.d.source(i), channel: channelName(e.o.channel, ch, e.o.channels)}
	cc.cs.ch = ch
	if stalled {
		cc.rcvbuf = 4096
	}
	switch e.o.target + "/" + e.o.transport {
	case "ferry/websocket":
		return &ferryWS{clientConf: cc}
	case "ferry/sse":
		return &ferrySSE{clientConf: cc}
	case "ferry/longpoll":
		return &ferryPoll{clientConf: cc}
	case "ferry/events":
		return &ferryEvents{clientConf: cc}
	case "socketio/websocket":
		return &sioWS{clientConf: cc}
	case "socketio/polling":
		return &sioPoll{clientConf: cc}
	case "gorilla/websocket":
		return &floorWS{clientConf: cc}
	}
	panic("unreachable: options are validated")
}

// clientConf is what every client has: the run's env, its node and channel, its source
// address, what it has received (cs), and for a stalled client a small receive buffer.
type clientConf struct {
	e       *env
	u       *url.URL // the node it connects to
	channel string   // the channel it subscribes to (ferry)
	laddr   *net.TCPAddr
	rcvbuf  int
	cs      seqState
}

// clientChannel is the channel index of client i among n channels when the clients go
// to nodes in turn: each run of nodes clients (one on each node) shares a channel, the
// runs take the channels in turn, so that every channel has readers on every node (as
// behind a load balancer) whatever the two counts are.
func clientChannel(i, n, nodes int) int { return i / max(nodes, 1) % max(n, 1) }

// channelName is the name of channel ch of n: prefix itself for one channel, else
// prefix-ch.
func channelName(prefix string, ch, n int) string {
	if n <= 1 {
		return prefix
	}
	return prefix + "-" + strconv.Itoa(ch)
}

// wsDialer returns a WebSocket dialer for the client's connections.
func (cc *clientConf) wsDialer() *websocket.Dialer {
	d := cc.e.wsDial
	d.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return cc.e.d.DialContext(ctx, network, addr, cc.laddr, cc.rcvbuf)
	}
	return &d
}

// httpConn returns a new HTTP connection of the client.
func (cc *clientConf) httpConn(ctx context.Context, rcvbuf int) *httpConn {
	return newHTTPConn(ctx, cc.e.d, cc.u, cc.laddr, rcvbuf)
}

// wsConn wraps a client WebSocket: reading into one reused buffer (gorilla's
// ReadMessage allocates one per message) and closing it when ctx is done.
type wsConn struct {
	c    *websocket.Conn
	buf  []byte
	stop func() bool
}

func dialWS(ctx context.Context, d *websocket.Dialer, u string) (*wsConn, error) {
	c, resp, err := d.DialContext(ctx, u, nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("websocket handshake: HTTP %d", resp.StatusCode)
		}
		return nil, err
	}
	w := &wsConn{c: c, buf: make([]byte, 0, 512)}
	// Closing the connection is how a blocked read learns that the run is over.
	w.stop = context.AfterFunc(ctx, func() { c.NetConn().SetDeadline(time.Unix(1, 0)) })
	return w, nil
}

// next returns the next text message; the slice is valid until the next call.
func (w *wsConn) next() ([]byte, error) {
	for {
		typ, r, err := w.c.NextReader()
		if err != nil {
			return nil, err
		}
		if typ != websocket.TextMessage {
			continue
		}
		b := w.buf[:0]
		for {
			if len(b) == cap(b) {
				b = append(b, 0)[:len(b)]
			}
			n, err := r.Read(b[len(b):cap(b)])
			b = b[:len(b)+n]
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, err
			}
		}
		w.buf = b
		return b, nil
	}
}

func (w *wsConn) close() {
	if w != nil {
		w.stop()
		w.c.Close()
	}
}
