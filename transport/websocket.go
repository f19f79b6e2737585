package transport

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ferryrt/ferry/session"
	"github.com/ferryrt/ferry/transport/internal/beat"
	"github.com/ferryrt/ferry/transport/internal/stream"
)

// defaultWriteWait bounds one write to a client; a client that doesn't read for this long
// is gone.
const defaultWriteWait = 10 * time.Second

// writeWaitNs is the bound in force, defaultWriteWait but for tests, which shorten it to
// see a stream outlive it (atomic, as closeHandshake).
var writeWaitNs atomic.Int64

func init() { writeWaitNs.Store(int64(defaultWriteWait)) }

// writeWait returns the bound of one write to a client.
func writeWait() time.Duration { return time.Duration(writeWaitNs.Load()) }

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
}

// NewWebSocket returns the WebSocket handler. Compression is off, so the read limit
// counts exactly the bytes a frame takes in memory (gorilla's limit counts compressed
// bytes, which a deflate bomb would turn into far more).
func NewWebSocket(cfg Config) *WebSocketHandler {
	c := cfg.withDefaults()
	return &WebSocketHandler{cfg: c, upgrader: websocket.Upgrader{
		// Zero: gorilla reads through the small buffer corkHijacker hands it (see
		// there), whose Buffered count tells the reader when to wait for the poller.
		ReadBufferSize:    0,
		WriteBufferSize:   4096,
		WriteBufferPool:   writeBufferPool,
		EnableCompression: false,
		CheckOrigin:       c.originAllowed,
		HandshakeTimeout:  10 * time.Second,
	}}
}

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
	req.OnClose = func(*session.Error) { conn.UnderlyingConn().SetWriteDeadline(time.Now().Add(h.cfg.CloseGrace)) }
	s := &wsSession{h: h, conn: conn, cork: hj.conn, guard: hj.guard, done: make(chan struct{})}
	req.OnWake = s.writer.Wake // held until the writer starts
	a, err := h.cfg.Manager.Attach(ctx, req)
	if err != nil {
		h.cfg.logFailure(r, "websocket attach", err)
		writeClose(conn, session.AsError(err))
		return // the writer never starts: nothing runs
	}
	s.a = a
	pool := h.cfg.writerPool(hj.conn.Conn)
	s.framed = pool != nil
	s.writer.Start(pool, s)
	// The connection is hijacked: net/http's request, response and buffers are of no more
	// use, but they stay reachable as long as this handler runs. Returning lets them go
	// (about 12 KiB and a deep stack per connection); the session lives on in callbacks.
	// The request's context ends with ServeHTTP, so the session has its own.
	detached = true
	s.end = h.cfg.outliveHandler(release)
	s.start(hj.br)
}

// wsSession is one WebSocket attachment. It reads like a plain handler: a read loop
// (read, readOne), a writer that writes what the attachment has (Write), a heartbeat,
// and a teardown (endRead) once the writer has sent the close frame (Finish).
//
// Who runs them is stream's: the reader (stream.Reader) and the writer (stream.Writer,
// which takes the attachment's batches with Next). Pooled (Config.IO), an idle session
// has no goroutine at all: a writer exists only while there are frames to write, as a
// task of the pool that never waits (Try, in wspooled.go), a reader only while the client
// has sent something (readPolled), and heartbeats come from a wheel (beat). Plain, or where the
// connection can't be watched (TLS, other platforms), one reader goroutine blocks in
// Read and every wake-up of the writer is a goroutine of its own.
type wsSession struct {
	h        *WebSocketHandler
	conn     *websocket.Conn
	cork     *corkConn
	framed   bool                // pooled I/O: data frames are framed here, not by gorilla (cork.go)
	guard    *closeGuard         // under br: takes the client's close frame out (wsclose.go)
	br       *bufio.Reader       // gorilla's read buffer: what it holds, no poller sees
	a        *session.Attachment // set before the writer starts
	end      func()              // releases the connection slot, once the session is torn down
	idle     time.Duration
	hb       *beat.Beat
	lastRead atomic.Int64 // UnixNano of the last frame or pong from the client

	done   chan struct{} // closed once the writer has sent the close frame, or failed
	once   sync.Once
	writer stream.Writer[session.Outgoing] // owns the writing: wake-ups, pool or goroutine
	reader stream.Reader                   // owns the reading, and with it the teardown (endRead)
}

// start arms the heartbeat and the reading side.
func (s *wsSession) start(br *bufio.Reader) {
	mc := s.h.cfg.Manager.Params()
	s.conn.SetReadLimit(int64(mc.MaxMessageBytes + frameOverhead))
	// A client answers every heartbeat's WebSocket ping with a pong, so two heartbeats of
	// silence mean it is gone, whether or not TCP has noticed.
	s.idle = 2 * mc.Heartbeat
	s.touch()
	s.conn.SetPongHandler(func(string) error { s.touch(); return nil })
	s.hb = heartbeats(mc.Heartbeat).Add(s.heartbeat)

	// Pooled reading sees every byte the client sent that no poller report will announce
	// again: those in br, the read buffer gorilla reads through (see corkHijacker). When
	// net/http had read ahead, gorilla reads through net/http's buffer instead, and a
	// goroutine reads.
	s.br = br
	s.reader.Start(s.cork.Conn, br != nil && s.h.cfg.pooled(), s.read, s.endRead)
}

// read reads and handles what the client sent: one frame, blocking (plain), or what has
// arrived (polled, see readPolled). It reports whether reading goes on.
func (s *wsSession) read(polled bool) bool {
	if polled {
		return s.readPolled()
	}
	return s.readOne()
}

// heartbeat runs every interval (due): a ping, or the end of a client that stopped
// answering; the ping waits for the data of the wheel's next tick, and goes out then
// (not due) if none carried it.
func (s *wsSession) heartbeat(due bool) {
	select {
	case <-s.done:
		return
	default:
	}
	switch {
	case !due:
		s.a.Flush()
	case time.Since(time.Unix(0, s.lastRead.Load())) > s.idle:
		s.a.Close(session.Errorf(session.CodeHeartbeat, "no frame or pong from the client in %v", s.idle))
	default:
		s.a.PingLater()
	}
}

func (s *wsSession) touch() { s.lastRead.Store(time.Now().UnixNano()) }

// Next takes the attachment's next batch, for the writer.
func (s *wsSession) Next(local bool) ([]session.Outgoing, error) { return nextBatch(s.a, local) }

// Finish ends the writing side: after the close frame (or a failed write) the reader gets
// closeHandshake for the client's answer, as in the close handshake, and ends (endRead).
func (s *wsSession) Finish() {
	s.once.Do(func() {
		s.conn.SetReadDeadline(time.Now().Add(time.Duration(closeHandshake.Load())))
		close(s.done)
		s.reader.Stop()
	})
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
	f, err := session.DecodeClientFrame(data, s.h.cfg.Manager.Params().MaxMessageBytes)
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

// Write sends one batch, one WebSocket message per frame gathered into one write to the
// socket, and reports whether the connection goes on. A ping frame also sends a
// WebSocket ping, whose pong keeps the reader's deadline moving.
func (s *wsSession) Write(out []session.Outgoing) (ok bool) {
	s.conn.SetWriteDeadline(time.Now().Add(writeWait()))
	s.sent(out)
	if s.framed {
		return s.writeFramed(out)
	}
	// A ping frame is followed by a WebSocket ping: corked, the two go in one write too.
	if len(out) > 1 || out[0].Kind == session.KindPing {
		s.cork.cork()
		defer func() {
			if err := s.cork.uncork(); err != nil && ok {
				writeFailed(s.a)
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
			writeFailed(s.a)
			return false
		}
		if o.Kind == session.KindPing {
			if err := s.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait())); err != nil {
				writeFailed(s.a)
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
