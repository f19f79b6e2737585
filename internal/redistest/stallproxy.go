package redistest

import (
	"bytes"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// StallProxy is a TCP proxy in front of a Redis whose traffic a test can hold: bytes held
// are read and kept, not passed on, until released. Nothing is closed and nothing fails,
// which is what a paused Redis or a dead link looks like to a client: requests go out
// and no answer comes.
type StallProxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu       sync.Mutex
	conns    map[*proxyConn]struct{}
	holdUp   bool // new connections start with their requests held
	isClosed bool
}

// proxyConn is one proxied connection: up carries the client's bytes to Redis, down
// Redis's answers back.
type proxyConn struct {
	client, server net.Conn
	up, down       *gate
	pubsub         atomic.Bool // the client sent a SUBSCRIBE on it
	once           sync.Once
	done           chan struct{}
}

// gate lets bytes through while open.
type gate struct {
	mu   sync.Mutex
	open chan struct{} // closed while the gate is open
}

func newGate(open bool) *gate {
	g := &gate{open: make(chan struct{})}
	if open {
		close(g.open)
	}
	return g
}

func (g *gate) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
		g.open = make(chan struct{})
	default:
	}
}

func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
}

// wait returns true once the gate is open, false if done is closed first.
func (g *gate) wait(done <-chan struct{}) bool {
	g.mu.Lock()
	open := g.open
	g.mu.Unlock()
	select {
	case <-open:
		return true
	case <-done:
		return false
	}
}

// NewStallProxy proxies a loopback port to target until the test ends.
func NewStallProxy(t testing.TB, target string) *StallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &StallProxy{ln: ln, target: target, conns: map[*proxyConn]struct{}{}}
	p.wg.Go(p.accept)
	t.Cleanup(p.Close)
	return p
}

// Addr is the address clients dial instead of target.
func (p *StallProxy) Addr() string { return p.ln.Addr().String() }

func (p *StallProxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		if p.isClosed {
			p.mu.Unlock()
			client.Close()
			server.Close()
			return
		}
		c := &proxyConn{client: client, server: server, up: newGate(!p.holdUp), down: newGate(true), done: make(chan struct{})}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Go(func() { p.pipe(c, c.server, c.client, c.up, true) })
		p.wg.Go(func() { p.pipe(c, c.client, c.server, c.down, false) })
	}
}

// pipe copies src to dst through g, and tears c down when either side ends.
func (p *StallProxy) pipe(c *proxyConn, dst, src net.Conn, g *gate, up bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if up && n > 0 && bytes.Contains(bytes.ToLower(buf[:n]), []byte("\r\nsubscribe\r\n")) {
			c.pubsub.Store(true)
		}
		if n > 0 {
			if !g.wait(c.done) {
				break
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	p.teardown(c)
}

// teardown closes both sides of c and lets its pipes go, once.
func (p *StallProxy) teardown(c *proxyConn) {
	c.once.Do(func() {
		close(c.done)
		c.client.Close()
		c.server.Close()
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	})
}

// HoldRequests holds what clients send to Redis, on every connection open now and every
// one opened later, until release: from the clients' side Redis stops answering, while
// what it sends of itself (pub/sub messages published by clients of another address)
// still arrives.
func (p *StallProxy) HoldRequests() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.holdUp = true
	for c := range p.conns {
		c.up.hold()
	}
}

// HoldAnswers holds what Redis sends back on every connection open now, until Release:
// requests still reach Redis and run, and their answers are lost to the client, as over
// a link that dies after the request went out. Connections opened later pass.
func (p *StallProxy) HoldAnswers() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.down.hold()
	}
}

// FreezePubSub holds both directions of every pub/sub connection open now (one that
// carried a SUBSCRIBE): they go silent, as over a link that died without a reset. Other
// connections, and those opened later, pass.
func (p *StallProxy) FreezePubSub() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for c := range p.conns {
		if c.pubsub.Load() {
			c.up.hold()
			c.down.hold()
			n++
		}
	}
	return n
}

// Release lets everything through again, what was held first.
func (p *StallProxy) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.holdUp = false
	for c := range p.conns {
		c.up.release()
		c.down.release()
	}
}

// Connections returns the number of proxied connections.
func (p *StallProxy) Connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close stops the proxy and closes every connection through it.
func (p *StallProxy) Close() {
	p.mu.Lock()
	p.isClosed = true
	conns := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	p.ln.Close()
	for _, c := range conns {
		p.teardown(c)
	}
	p.wg.Wait()
}
