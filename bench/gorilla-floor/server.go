package main

import (
	"bytes"
	"io"
	"log"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// config is the server's tuning; the zero value is valid, withDefaults fills it in.
type config struct {
	// workers is the number of shards of connections, each written by one goroutine.
	// Default: GOMAXPROCS, and at least 4, so that one blocked write holds back at most a
	// quarter of the connections even on one core.
	workers int
	// writeWait bounds one write to one connection; a connection whose write fails or
	// times out is dropped. See defaultWriteWait.
	writeWait time.Duration
	// queueLen bounds the messages published and not yet taken by the broadcaster;
	// POST /publish waits while it is full.
	queueLen int
	// maxFrame is the size up to which pending messages are joined into one frame.
	maxFrame int
}

// defaultWriteWait is the write deadline. A write blocks only once the kernel's send
// buffer for that connection is full, that is when the client is already behind by
// the whole buffer (tens of KiB at least); the deadline is only its grace to make room
// for one more frame, and a few round trips of a slow mobile link fit in it. Every
// connection of the shard waits while it runs, and the next frame waits for every
// shard, so it is also what one stuck client can cost the others: once, since it is
// then dropped.
const defaultWriteWait = 250 * time.Millisecond

const (
	defaultQueueLen = 1024
	maxMessage      = 64 << 10 // the largest body POST /publish takes
	defaultMaxFrame = 64 << 10
)

func (c config) withDefaults() config {
	if c.workers <= 0 {
		c.workers = max(4, runtime.GOMAXPROCS(0))
	}
	if c.writeWait <= 0 {
		c.writeWait = defaultWriteWait
	}
	if c.queueLen <= 0 {
		c.queueLen = defaultQueueLen
	}
	if c.maxFrame <= 0 {
		c.maxFrame = defaultMaxFrame
	}
	return c
}

// server broadcasts every message of POST /publish to every WebSocket of GET /ws.
//
// One broadcaster takes the published messages in order, joins all those pending into
// one frame, prepares it once and hands it to the workers; each worker writes it to its
// shard of the connections, and the broadcaster waits for all of them before the next
// frame, while the messages published meanwhile pile up to be joined. Each connection
// has one goroutine, its reader (which answers pings and notices the close); nothing
// else is held per connection between frames.
type server struct {
	cfg      config
	upgrader websocket.Upgrader
	queue    chan []byte // published, not yet taken by the broadcaster
	shards   []*shard
	next     atomic.Uint32 // round-robin shard of the next connection

	done      chan struct{} // closed by Close
	closeOnce sync.Once
	loops     sync.WaitGroup // the broadcaster and the workers
	readers   sync.WaitGroup // one per registered connection
	pass      sync.WaitGroup // the workers still writing the current frame

	messages atomic.Int64 // messages broadcast
	frames   atomic.Int64 // frames broadcast, each of one or more messages
	dropped  atomic.Int64 // connections dropped because a write failed or timed out
}

// shard is the connections one worker writes to.
type shard struct {
	frames chan *websocket.PreparedMessage // from the broadcaster

	mu     sync.Mutex
	conns  []*conn // conns[i].idx == i
	closed bool    // no more connections: the server is closing
}

type conn struct {
	ws  *websocket.Conn
	sh  *shard
	idx int // position in sh.conns, -1 once removed; guarded by sh.mu
}

func newServer(cfg config) *server {
	cfg = cfg.withDefaults()
	s := &server{
		cfg: cfg,
		upgrader: websocket.Upgrader{
			// Clients send nothing but control frames: a small read buffer of the
			// connection's own rather than net/http's 4 KiB. Prepared and control
			// frames need no write buffer, so none is held per connection: the pool
			// would serve only NextWriter, which the server never calls.
			ReadBufferSize:  256,
			WriteBufferPool: &sync.Pool{},
		},
		queue: make(chan []byte, cfg.queueLen),
		done:  make(chan struct{}),
	}
	for range cfg.workers {
		s.shards = append(s.shards, &shard{frames: make(chan *websocket.PreparedMessage, 1)})
	}
	return s
}

// start starts the broadcaster and the workers.
func (s *server) start() {
	s.loops.Add(1 + len(s.shards))
	go s.broadcast()
	for _, sh := range s.shards {
		go s.work(sh)
	}
}

// handler returns the HTTP surface: GET /ws and POST /publish.
func (s *server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", s.serveWS)
	mux.HandleFunc("/publish", s.servePublish)
	return mux
}

// Close stops broadcasting, closes every connection (with a going-away close frame)
// and returns once every goroutine of the server has ended. Messages still queued are
// not sent.
func (s *server) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		s.loops.Wait()
		var all []*conn
		for _, sh := range s.shards {
			sh.mu.Lock()
			sh.closed = true
			for _, c := range sh.conns {
				c.idx = -1
			}
			all = append(all, sh.conns...)
			sh.conns = nil
			sh.mu.Unlock()
		}
		bye := websocket.FormatCloseMessage(websocket.CloseGoingAway, "")
		for _, c := range all {
			c.ws.WriteControl(websocket.CloseMessage, bye, time.Now().Add(s.cfg.writeWait))
			c.ws.Close()
		}
		s.readers.Wait()
	})
}

// count returns the connections registered.
func (s *server) count() int {
	n := 0
	for _, sh := range s.shards {
		sh.mu.Lock()
		n += len(sh.conns)
		sh.mu.Unlock()
	}
	return n
}

func (s *server) serveWS(w http.ResponseWriter, r *http.Request) {
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	sh := s.shards[int(s.next.Add(1))%len(s.shards)]
	c := &conn{ws: ws, sh: sh}
	sh.mu.Lock()
	if sh.closed {
		sh.mu.Unlock()
		ws.Close()
		return
	}
	c.idx = len(sh.conns)
	sh.conns = append(sh.conns, c)
	s.readers.Add(1)
	sh.mu.Unlock()
	// A goroutine of its own rather than this one: returning lets net/http release the
	// request's buffers, which an idle connection would otherwise hold.
	go s.read(c)
}

// read discards what the client sends (gorilla answers its pings) until the
// connection ends, then drops it.
func (s *server) read(c *conn) {
	defer s.readers.Done()
	for {
		if _, _, err := c.ws.NextReader(); err != nil {
			break
		}
	}
	s.drop(c)
}

// drop removes c from its shard, if it is still there, and closes it. It reports
// whether c was still registered.
func (s *server) drop(c *conn) bool {
	sh := c.sh
	sh.mu.Lock()
	was := c.idx >= 0
	if was {
		last := sh.conns[len(sh.conns)-1]
		sh.conns[c.idx] = last
		last.idx = c.idx
		sh.conns[len(sh.conns)-1] = nil
		sh.conns = sh.conns[:len(sh.conns)-1]
		c.idx = -1
	}
	sh.mu.Unlock()
	c.ws.Close()
	return was
}

// abort drops c after a failed write. The frame was cut short, so the stream is of no
// use to the client any more: the connection is reset rather than closed, which also
// frees at once what the kernel still held queued for it.
func (s *server) abort(c *conn) {
	if tc, ok := c.ws.NetConn().(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	if s.drop(c) {
		s.dropped.Add(1)
	}
}

func (s *server) servePublish(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxMessage))
	if err != nil {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	// Frames join messages with newlines, so a message is one non-empty line (compact
	// JSON, say); a final newline, as curl -d @file sends, is not part of it.
	body = bytes.TrimRight(body, "\r\n")
	if len(body) == 0 || bytes.IndexByte(body, '\n') >= 0 {
		http.Error(w, "a message is one non-empty line", http.StatusBadRequest)
		return
	}
	select {
	case <-s.done:
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	default:
	}
	select {
	case s.queue <- body:
		w.WriteHeader(http.StatusNoContent)
	case <-s.done:
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
	case <-r.Context().Done():
	}
}

// broadcast takes the published messages, joins those pending into one frame (one
// message a line), and hands each frame to every worker, waiting for all of them to
// have written it before it takes the next.
func (s *server) broadcast() {
	defer s.loops.Done()
	defer func() {
		for _, sh := range s.shards {
			close(sh.frames)
		}
	}()
	var buf, carry []byte
	for {
		select {
		case <-s.done:
			return
		default:
		}
		msg := carry
		carry = nil
		if msg == nil {
			select {
			case msg = <-s.queue:
			case <-s.done:
				return
			}
		}
		buf = append(buf[:0], msg...)
		n := int64(1)
	join:
		for {
			select {
			case m := <-s.queue:
				if len(buf)+1+len(m) > s.cfg.maxFrame {
					carry = m
					break join
				}
				buf = append(append(buf, '\n'), m...)
				n++
			default:
				break join
			}
		}
		// NewPreparedMessage copies buf into the frame: buf is free for the next one.
		pm, err := websocket.NewPreparedMessage(websocket.TextMessage, buf)
		if err != nil {
			log.Printf("prepare: %v", err) // unreachable for an uncompressed text frame
			continue
		}
		s.messages.Add(n)
		s.frames.Add(1)
		s.pass.Add(len(s.shards))
		for _, sh := range s.shards {
			sh.frames <- pm
		}
		s.pass.Wait()
	}
}

// work writes each frame to every connection of sh, dropping those whose write fails
// or takes longer than writeWait.
func (s *server) work(sh *shard) {
	defer s.loops.Done()
	var batch []*conn
	for pm := range sh.frames {
		// A copy, so that connections come and go while the frame is written.
		sh.mu.Lock()
		batch = append(batch[:0], sh.conns...)
		sh.mu.Unlock()
		for _, c := range batch {
			// A deadline per write, not per frame: a healthy connection late in a long
			// shard must not time out for the time the others took.
			c.ws.SetWriteDeadline(time.Now().Add(s.cfg.writeWait))
			if err := c.ws.WritePreparedMessage(pm); err != nil {
				s.abort(c)
			}
		}
		clear(batch) // hold no connection until the next frame
		s.pass.Done()
	}
}
