package transport

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ferryrt/ferry/session"
	"github.com/ferryrt/ferry/transport/internal/netpoll"
	"github.com/ferryrt/ferry/transport/internal/workers"
)

// writeWait bounds one write to a client; a client that doesn't read for this long is gone.
const writeWait = 10 * time.Second

// frameOverhead is what a send frame adds to its payload (type, seq, channel); the read
// limit is the payload limit plus this.
const frameOverhead = 512

// writeBufferPool lends write buffers to connections only while they write: an idle
// connection holds none (gorilla otherwise keeps 4 KiB per connection).
var writeBufferPool = &sync.Pool{}

// WebSocketHandler serves GET /ws. PROTOCOL.md §4.
type WebSocketHandler struct {
	cfg      *Config
	upgrader websocket.Upgrader
	pool     *workers.Pool // writers of connections that take non-blocking writes
}

// NewWebSocket returns the WebSocket handler. Compression is off, so the read limit
// counts exactly the bytes a frame takes in memory (gorilla's limit counts compressed
// bytes, which a deflate bomb would turn into far more).
func NewWebSocket(cfg Config) *WebSocketHandler {
	c := cfg.withDefaults()
	return &WebSocketHandler{cfg: c, upgrader: websocket.Upgrader{
		// Zero: gorilla reads through the small buffer corkHijacker hands it, whose
		// Buffered count tells the reader when to wait for the poller again.
		ReadBufferSize:    0,
		WriteBufferSize:   4096,
		WriteBufferPool:   writeBufferPool,
		EnableCompression: false,
		CheckOrigin:       c.originAllowed,
		HandshakeTimeout:  10 * time.Second,
	}, pool: workers.New(wsWriters, 250*time.Millisecond)}
}

// wsWriters bounds the pool that writes to WebSocket clients. A write there never waits
// (what the kernel doesn't take at once is finished on a goroutine of the session's own),
// so a few workers per core keep the cores busy; more would only take turns with them,
// and with everything else the process must do (the publish that starts the next
// fan-out among it).
var wsWriters = 2*runtime.GOMAXPROCS(0) + 2

// wsTryBytes is the largest batch a pool worker writes; a larger one (or the close) is
// written by a goroutine of its own, which may wait.
const wsTryBytes = 32 << 10

func (h *WebSocketHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.cfg.originAllowed(r) {
		h.cfg.obs().Rejected("origin")
		writeError(w, session.Errorf(session.CodeForbidden, "origin %.80q not allowed", r.Header.Get("Origin")))
		return
	}
	// Connection caps apply before the upgrade, so a flood costs an HTTP answer only.
	release, err := h.cfg.Limiter.acquire(r)
	if err != nil {
		h.cfg.logFailure(r, "websocket", err)
		writeError(w, err)
		return
	}
	detached := false
	defer func() {
		if !detached {
			release()
		}
	}()
	hj := &corkHijacker{ResponseWriter: w}
	conn, err := h.upgrader.Upgrade(hj, r, nil)
	if err != nil {
		return // the upgrader has answered with an HTTP error
	}
	defer func() {
		if !detached {
			conn.Close()
		}
	}()

	// Errors in the credential or cursor are reported after the upgrade: a browser sees no
	// status of a failed handshake, only close code 1006, which means "try another
	// transport" to a client.
	ctx := r.Context()
	req, err := h.cfg.attachRequest(ctx, r, WebSocket)
	if err != nil {
		h.cfg.logFailure(r, "websocket attach", err)
		writeClose(conn, session.AsError(err))
		return
	}
	// A close (slow consumer, superseded, shutdown) must not wait long behind a write that
	// is stuck on a client that stopped reading. Cutting it at once could cut a frame in
	// half, and the close frame after it would be garbage to a client that reads again;
	// closeGrace lets a client that is only behind take the frame and the close code.
	req.OnClose = func(*session.Error) { conn.UnderlyingConn().SetWriteDeadline(time.Now().Add(closeGrace)) }
	s := &wsSession{h: h, conn: conn, cork: hj.conn, guard: hj.guard, attached: make(chan struct{}), done: make(chan struct{})}
	_, raw := hj.conn.Conn.(syscall.Conn) // not over TLS: records buffered above the socket
	s.pooled = raw && netpoll.Supported() && h.cfg.pooled()
	s.flushFn = s.flush
	req.OnWake = s.wake
	a, err := h.cfg.Manager.Attach(ctx, req)
	if err != nil {
		close(s.attached) // a writer started by an early wake finds no attachment and ends
		h.cfg.logFailure(r, "websocket attach", err)
		writeClose(conn, session.AsError(err))
		return
	}
	s.a = a
	s.isAttached.Store(true)
	close(s.attached)
	// The connection is hijacked: net/http's request, response and buffers are of no more
	// use, but they stay reachable as long as this handler runs. Returning lets them go
	// (about 12 KiB and a deep stack per connection); the session lives on in callbacks.
	// The request's context ends with ServeHTTP, so the session has its own.
	detached = true
	s.end = h.cfg.outliveHandler(release)
	s.start(hj.br)
}

// wsSession is one WebSocket attachment. An idle one has no goroutine at all: a writer
// exists only while there are frames to write (the attachment's OnWake starts one, which
// drains with TryNext and ends when nothing is left), a reader only while the client has
// sent something (netpoll reports it; see onReadable), and heartbeats come from a timer.
// Where the connection can't be watched (TLS, other platforms), one reader goroutine
// blocks in Read instead.
type wsSession struct {
	h        *WebSocketHandler
	conn     *websocket.Conn
	cork     *corkConn
	guard    *closeGuard         // under br: takes the client's close frame out (wsclose.go)
	br       *bufio.Reader       // gorilla's read buffer: what it holds, no poller sees
	a        *session.Attachment // set before attached is closed
	attached chan struct{}
	// pooled: the connection takes non-blocking writes, so wakes run the writer on the
	// handler's pool (isAttached, once s.a is set) rather than on a new goroutine.
	pooled     bool
	isAttached atomic.Bool
	flushFn    func()
	end        func() // releases the connection slot, once the session is torn down
	idle       time.Duration
	hb         *time.Timer
	lastRead   atomic.Int64 // UnixNano of the last frame or pong from the client

	done chan struct{} // closed once the writer has sent the close frame, or failed
	once sync.Once

	mu      sync.Mutex // orders the reader's deadline and watch against the closing writer
	closing bool
	watch   *netpoll.Watch // nil with a blocking reader
}

// start arms the heartbeat and the reading side.
func (s *wsSession) start(br *bufio.Reader) {
	mc := s.h.cfg.Manager.Config()
	s.conn.SetReadLimit(int64(mc.MaxMessageBytes + frameOverhead))
	// A client answers every heartbeat's WebSocket ping with a pong, so two heartbeats of
	// silence mean it is gone, whether or not TCP has noticed.
	s.idle = 2 * mc.Heartbeat
	s.touch()
	s.conn.SetPongHandler(func(string) error { s.touch(); return nil })
	s.hb = time.AfterFunc(time.Hour, func() { s.heartbeat(mc.Heartbeat) })
	s.hb.Stop() // armed only once s.hb is set, which the callback uses
	s.hb.Reset(mc.Heartbeat)

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		go s.endRead() // the writer has closed already: only the close handshake is left
		return
	}
	if br != nil && s.h.cfg.pooled() {
		s.br = br
		if w, err := netpoll.Start(s.cork.Conn, s.onReadable); err == nil {
			s.watch = w
			return
		}
	}
	go func() {
		for s.readOne() {
		}
		s.endRead()
	}()
}

// heartbeat runs every interval: a ping, or the end of a client that stopped answering.
func (s *wsSession) heartbeat(every time.Duration) {
	select {
	case <-s.done:
		return
	default:
	}
	if time.Since(time.Unix(0, s.lastRead.Load())) > s.idle {
		s.a.Close(session.Errorf(session.CodeHeartbeat, "no frame or pong from the client in %v", s.idle))
		return
	}
	s.a.Ping()
	s.hb.Reset(every)
}

func (s *wsSession) touch() { s.lastRead.Store(time.Now().UnixNano()) }

// onReadable runs on a goroutine of its own when the client has sent something. It
// handles what has arrived, then waits for the next report, or ends the session's
// reading when the attachment is over. Pings and pongs are handled here (see
// wsframe.go): only a data message is read through gorilla, which blocks until the
// message is whole.
func (s *wsSession) onReadable() {
	// Readable: this fill returns what the kernel has (or the end) without waiting. It
	// asks for one byte more than is buffered, which is at most a control frame's start.
	// A close frame not whole yet is left to the next report, like a ping.
	s.guard.nonblock = true
	_, err := s.br.Peek(s.br.Buffered() + 1)
	s.guard.nonblock = false
	if err != nil && err != errCloseIncomplete {
		s.a.Close(readError(err))
		s.endRead()
		return
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
			s.endRead()
			return
		}
	}
	if err := s.guard.Err(); err != nil && s.br.Buffered() == 0 {
		// The client's close came behind what was just handled: no report will follow,
		// the guard has read it off the socket.
		s.a.Close(readError(err))
		s.endRead()
		return
	}
	s.mu.Lock()
	w := s.watch
	s.mu.Unlock()
	if !w.Arm() {
		s.endRead() // stopped by the closing writer meanwhile: reading is ours to end
	}
}

// wake runs under the attachment's lock when frames are ready and no writer runs.
func (s *wsSession) wake() {
	if s.pooled && s.isAttached.Load() {
		s.h.pool.Go(s.flushFn)
	} else {
		go s.flush()
	}
}

// finish ends the writing side: after the close frame (or a failed write) the reader gets
// closeHandshake for the client's answer, as in the close handshake. When no reader
// runs, one starts for that.
func (s *wsSession) finish() {
	s.once.Do(func() {
		s.mu.Lock()
		s.closing = true
		s.conn.SetReadDeadline(time.Now().Add(time.Duration(closeHandshake.Load())))
		w := s.watch
		s.mu.Unlock()
		close(s.done)
		if w != nil && w.Stop() {
			go s.endRead()
		}
	})
}

// flush writes what the attachment has until nothing is left, then ends; after the close
// frame or a failed write it finishes without asking for more, so no writer starts again.
func (s *wsSession) flush() {
	<-s.attached
	if s.a == nil {
		return
	}
	s.drain(s.pooled)
}

// drain is the writer's loop. Pooled (on a pool worker, whose time is shared) it never
// waits: a batch goes out with one non-blocking write, and the writer moves to a goroutine
// of its own before anything that could wait (the rest of a write the kernel didn't take,
// a large batch, the close).
func (s *wsSession) drain(pooled bool) {
	for {
		var out []session.Outgoing
		var err error
		if pooled {
			// A history read (a new channel, a gap) waits on the store: not on the pool.
			if out, err = s.a.TryNextLocal(); errors.Is(err, session.ErrNeedsSource) {
				go s.drain(false)
				return
			}
		} else {
			out, err = s.a.TryNext(context.Background())
		}
		if err != nil {
			s.finish()
			return
		}
		if len(out) == 0 {
			return // idle: the next frame wakes a new writer
		}
		if pooled && !tryable(out) {
			go func() {
				if !s.write(out) {
					s.finish()
					return
				}
				s.drain(false)
			}()
			return
		}
		if !pooled {
			if !s.write(out) {
				s.finish()
				return
			}
			continue
		}
		rest, ok := s.writeNow(out)
		if !ok {
			s.finish()
			return
		}
		if rest != nil {
			go func() {
				if err := s.cork.writeRest(rest); err != nil {
					s.a.Close(&session.Error{Code: session.CodeAbnormal, Reason: "write failed"})
					s.finish()
					return
				}
				s.drain(false)
			}()
			return
		}
	}
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

// closeGrace bounds a write that holds up a close, and (closeHandshake) the wait for the
// client's close frame.
const closeGrace = time.Second

// readOne reads and handles one client frame. It reports false when the connection
// failed or a frame was bad (having closed the attachment, which ends the writer) or the
// attachment is closed already.
func (s *wsSession) readOne() bool {
	typ, data, err := s.conn.ReadMessage()
	if err != nil {
		s.a.Close(readError(err))
		return false
	}
	if s.a.Err() != nil {
		return false
	}
	s.touch()
	s.h.cfg.obs().Received(WebSocket, 1, len(data))
	if typ != websocket.TextMessage {
		s.a.Close(session.Errorf(session.CodeBadRequest, "binary WebSocket messages are not part of the protocol"))
		return false
	}
	f, err := session.DecodeClientFrame(data, s.h.cfg.Manager.Config().MaxMessageBytes)
	if err != nil {
		s.h.cfg.obs().Rejected("bad_request")
		s.a.Close(session.AsError(err))
		return false
	}
	s.h.cfg.Manager.HandleFrame(context.Background(), s.a, &f)
	return true
}

// endRead tears the session down, on the one goroutine that owns the reading now: it
// reads and drops what the client still sends until the client's close frame (at once
// if it has come already), the end of the connection or the close handshake's deadline,
// waits for the writer's close frame, and closes TCP: right after the server's close
// frame when the client's came first (RFC 6455 §7.1.1: the server closes first).
func (s *wsSession) endRead() {
	s.mu.Lock()
	w := s.watch
	s.mu.Unlock()
	if w != nil {
		w.Stop() // before Close: the descriptor must leave the epoll set first
	}
	// Through the guard, which follows the frames: data frames and pings are dropped,
	// the client's close ends the copy. Reading on (to the end or the deadline) rather
	// than closing at once matters after a protocol error: closing a socket with unread
	// input sends a reset, which can destroy the close frame before the client reads it.
	io.Copy(io.Discard, s.guard)
	// The writer has sent the close frame (the client answered, or the deadline passed),
	// or the read failed and closed the attachment, whose close frame a writer is
	// sending now.
	<-s.done
	s.hb.Stop()
	s.h.cfg.Manager.Detach(s.a)
	s.conn.Close()
	s.end()
}

// readError maps a read failure to the reason the attachment ends with.
func readError(err error) *session.Error {
	var ce *websocket.CloseError
	var pc *peerClose
	var se *session.Error
	switch {
	case errors.As(err, &pc):
		// Answered with the client's own code (1005: an empty close frame).
		return &session.Error{Code: session.Code(pc.code), Reason: "closed by client"}
	case errors.As(err, &se):
		return se // a close frame that fails the connection (closeGuard)
	case errors.Is(err, websocket.ErrReadLimit):
		return session.Errorf(session.CodeTooBig, "frame exceeds the size limit")
	case errors.As(err, &ce):
		return &session.Error{Code: session.Code(ce.Code), Reason: "closed by client"}
	}
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		return session.Errorf(session.CodeHeartbeat, "no frame or pong from the client in time")
	}
	if msg, ok := strings.CutPrefix(err.Error(), "websocket: "); ok {
		// A violation gorilla found (reserved bits, opcode, mask, fragmentation), which it
		// has answered with a close frame of its own; the code is for the metrics.
		return session.Errorf(codeProtocolError, "protocol error: %s", msg)
	}
	return &session.Error{Code: session.CodeAbnormal, Reason: "connection lost"}
}

// write sends one batch, one WebSocket message per frame gathered into one write to the
// socket, and reports whether the connection goes on. A ping frame also sends a
// WebSocket ping, whose pong keeps the reader's deadline moving.
func (s *wsSession) write(out []session.Outgoing) (ok bool) {
	s.conn.SetWriteDeadline(time.Now().Add(writeWait))
	s.sent(out)
	// A ping frame is followed by a WebSocket ping: corked, the two go in one write too.
	if len(out) > 1 || out[0].Kind == session.KindPing {
		s.cork.cork()
		defer func() {
			if err := s.cork.uncork(); err != nil && ok {
				s.a.Close(&session.Error{Code: session.CodeAbnormal, Reason: "write failed"})
				ok = false
			}
		}()
	}
	for _, o := range out {
		if o.Kind == session.KindClose {
			writeClose(s.conn, s.a.Err())
			return false
		}
		if err := s.conn.WriteMessage(websocket.TextMessage, o.JSON); err != nil {
			s.a.Close(&session.Error{Code: session.CodeAbnormal, Reason: "write failed"})
			return false
		}
		if o.Kind == session.KindPing {
			if err := s.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait)); err != nil {
				s.a.Close(&session.Error{Code: session.CodeAbnormal, Reason: "write failed"})
				return false
			}
		}
	}
	return true
}

// sent counts a batch in the Observer's figures.
func (s *wsSession) sent(out []session.Outgoing) {
	bytes := 0
	for _, o := range out {
		bytes += len(o.JSON)
	}
	s.h.cfg.obs().Sent(WebSocket, len(out), bytes)
}
