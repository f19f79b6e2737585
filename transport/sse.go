package transport

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferryrt/ferry/session"
	"github.com/ferryrt/ferry/transport/internal/stream"
)

// SSEHandler serves GET /sse: the session's frames as a text/event-stream, upstream by
// POST /send. PROTOCOL.md §4.
type SSEHandler struct{ cfg *Config }

// NewSSE returns the SSE handler.
func NewSSE(cfg Config) *SSEHandler { return &SSEHandler{cfg: cfg.withDefaults()} }

// SetStreamHeaders sets the headers of an event stream that keep proxies from caching or
// buffering it.
func SetStreamHeaders(h http.Header) {
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer this response
	h.Set("Connection", "keep-alive")
}

func (h *SSEHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	release, ok := h.cfg.admitGET(w, r, "sse")
	if !ok {
		return
	}
	// An HTTP/1.1 stream moves to its own goroutine on the hijacked connection, which
	// then owns the connection slot; see serveHijacked.
	if r.ProtoMajor == 1 && h.cfg.pooled() && h.serveHijacked(w, r, release) {
		return
	}
	defer release()
	rc := http.NewResponseController(w)
	// A stream lives longer than any server WriteTimeout or ReadTimeout (whose expiry
	// would cancel the request); each write sets its own deadline.
	rc.SetWriteDeadline(time.Time{})
	rc.SetReadDeadline(time.Time{})
	SetStreamHeaders(w.Header())
	w.WriteHeader(http.StatusOK)
	// The retry hint waits in the response's own buffer until the first flush.
	io.WriteString(w, "retry: "+strconv.Itoa(h.cfg.SSERetry)+"\n\n")

	ctx := r.Context()
	req, err := h.cfg.attachRequest(ctx, r, SSE)
	if err == nil {
		err = applyLastEventID(req.Cursor, r.Header.Get("Last-Event-ID"))
	}
	// See the WebSocket handler: a close bounds a write stuck on a client that stopped
	// reading. The deadline is set on the connection, which allows it from any goroutine.
	req.OnClose = func(*session.Error) { rc.SetWriteDeadline(time.Now().Add(closeGrace)) }
	var a *session.Attachment
	if err == nil {
		a, err = h.cfg.Manager.Attach(ctx, req)
	}
	if err != nil {
		// An EventSource can't read the status of a failed request, so the reason travels
		// as a close event in a 200 response.
		h.cfg.logFailure(r, "sse attach", err)
		e := session.AsError(err)
		bw := getSSEWriter(w)
		writeEvent(bw, (&session.ServerFrame{T: session.FrameClose, Code: e.Code, Reason: e.Reason}).Encode())
		putSSEWriter(bw)
		return
	}
	defer h.cfg.Manager.Detach(a)
	for {
		out, err := a.Next(ctx, time.Time{})
		if err != nil {
			return
		}
		bytes := 0
		// A stream waits far longer than it writes: its buffer is lent for the batch only.
		bw := getSSEWriter(w)
		for _, o := range out {
			writeEvent(bw, o)
			bytes += len(o.JSON)
		}
		h.cfg.obs().Sent(SSE, len(out), bytes)
		rc.SetWriteDeadline(time.Now().Add(writeWait))
		if putSSEWriter(bw) != nil || rc.Flush() != nil {
			a.Close(&session.Error{Code: session.CodeAbnormal, Reason: "write failed"})
			return
		}
	}
}

var sseWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4096) }}

func getSSEWriter(w io.Writer) *bufio.Writer {
	bw := sseWriters.Get().(*bufio.Writer)
	bw.Reset(w)
	return bw
}

// putSSEWriter flushes bw and returns it to the pool.
func putSSEWriter(bw *bufio.Writer) error {
	err := bw.Flush()
	bw.Reset(nil)
	sseWriters.Put(bw)
	return err
}

// writeEvent writes one frame as an SSE event. Frames are single-line JSON (payloads are
// compacted, and JSON escapes CR and LF in strings), and event ids come from restricted
// character sets, so no field can break out of its line.
func writeEvent(bw *bufio.Writer, o session.Outgoing) {
	if o.EventID != "" {
		bw.WriteString("id: ")
		bw.WriteString(o.EventID)
		bw.WriteByte('\n')
	}
	bw.WriteString("data: ")
	bw.Write(o.JSON)
	bw.WriteString("\n\n")
}

// applyLastEventID lets a browser's own reconnect resume: an id "<channel>=<position>" newer
// than the cursor's entry for that channel (same epoch) replaces it.
func applyLastEventID(cur session.Cursor, id string) error {
	if id == "" {
		return nil
	}
	if len(id) > session.MaxChannelLen+64 {
		return session.Errorf(session.CodeBadRequest, "Last-Event-ID too long")
	}
	eq := strings.LastIndexByte(id, '=')
	if eq < 0 {
		return session.Errorf(session.CodeBadRequest, "bad Last-Event-ID %.40q: want <channel>=<position>", id)
	}
	pos, err := session.ParsePosition(id[eq+1:])
	if err != nil {
		return err
	}
	for i, e := range cur {
		if e.Channel == id[:eq] && e.Position.Epoch == pos.Epoch && pos.Offset > e.Position.Offset {
			cur[i].Position = pos
		}
	}
	return nil
}

// serveHijacked serves an HTTP/1.1 stream on the hijacked connection, so that net/http's
// buffers, request and handler goroutine go once the stream has started: an idle stream
// then costs its attachment and no goroutine (see sseStream). It reports false, having done nothing, when the connection can't be
// hijacked (HTTP/2, a wrapper that hides it) or the request doesn't attach.
func (h *SSEHandler) serveHijacked(w http.ResponseWriter, r *http.Request, release func()) bool {
	req, err := h.cfg.attachRequest(r.Context(), r, SSE)
	if err == nil {
		err = applyLastEventID(req.Cursor, r.Header.Get("Last-Event-ID"))
	}
	if err != nil {
		return false // the ordinary path answers the error as an event
	}
	hdr := w.Header().Clone()
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return false
	}
	// net/http leaves the deadlines of a hijacked connection unspecified; a stream lasts
	// longer than any ReadTimeout, and its reads only watch for the client leaving.
	conn.SetReadDeadline(time.Time{})
	s := &sseStream{h: h, conn: conn, ready: make(chan struct{}), closed: make(chan struct{})}
	req.OnClose = func(*session.Error) { conn.SetWriteDeadline(time.Now().Add(closeGrace)) }
	req.OnWake = s.wake
	// The request's context stays valid after Hijack until this handler returns.
	a, err := h.cfg.Manager.Attach(r.Context(), req)
	SetStreamHeaders(hdr)
	hdr.Set("Connection", "close") // the stream ends with the connection
	b := []byte("HTTP/1.1 200 OK\r\n")
	var hb bytes.Buffer
	hdr.Write(&hb)
	b = append(b, hb.Bytes()...)
	b = append(b, "\r\nretry: "+strconv.Itoa(h.cfg.SSERetry)+"\n\n"...)
	if err != nil {
		close(s.ready)
		h.cfg.logFailure(r, "sse attach", err)
		e := session.AsError(err)
		bw := getSSEWriter(conn)
		bw.Write(b)
		writeEvent(bw, (&session.ServerFrame{T: session.FrameClose, Code: e.Code, Reason: e.Reason}).Encode())
		conn.SetWriteDeadline(time.Now().Add(writeWait))
		putSSEWriter(bw)
		conn.Close()
		release()
		return true
	}
	s.a = a
	conn.SetWriteDeadline(time.Now().Add(writeWait))
	if _, err := conn.Write(b); err != nil {
		a.Close(&session.Error{Code: session.CodeAbnormal, Reason: "write failed"})
	}
	close(s.ready)
	s.start(h.cfg.outliveHandler(release))
	return true
}

// sseStream is a stream on a hijacked connection. A client sends nothing after its
// request, so reading only notices it leaving: pooled, the stream.Reader's poller reports
// that without a goroutine (a reader goroutine blocks in Read where the connection can't
// be watched). A writer goroutine runs while there are frames (see wsSession), heartbeats
// come from a timer.
type sseStream struct {
	h      *SSEHandler
	conn   net.Conn
	a      *session.Attachment // set before ready is closed
	ready  chan struct{}       // the response header is out
	closed chan struct{}       // the connection is closed
	hb     *time.Timer
	end    func() // releases the connection slot once the stream is torn down
	once   sync.Once
	reader stream.Reader // owns the reading, and with it the teardown
}

// wake runs under the attachment's lock when frames are ready and no writer runs.
func (s *sseStream) wake() { go s.flush() }

// closeConn closes the connection, once. The reading stops first (a descriptor must
// leave the epoll set before it is closed), and its end tears the stream down.
func (s *sseStream) closeConn() {
	s.once.Do(func() {
		s.reader.Stop()
		s.conn.Close()
		close(s.closed)
	})
}

func (s *sseStream) start(end func()) {
	s.end = end
	every := s.h.cfg.Manager.Config().Heartbeat
	s.hb = time.AfterFunc(time.Hour, func() {
		select {
		case <-s.closed:
		default:
			s.a.Ping()
			s.hb.Reset(every)
		}
	})
	s.hb.Stop() // armed only once s.hb is set, which the callback uses
	s.hb.Reset(every)
	s.reader.Start(s.conn, true, s.read, s.teardown)
}

// read notices the client leaving: anything it sends is ignored. Polled, the connection
// is readable, so the read does not wait.
func (s *sseStream) read(bool) bool {
	var b [64]byte
	_, err := s.conn.Read(b[:])
	return err == nil
}

// teardown ends the stream, on the one goroutine that owns its reading.
func (s *sseStream) teardown() {
	s.a.Close(&session.Error{Code: session.CodeAbnormal, Reason: "connection lost"})
	<-s.closed
	s.hb.Stop()
	s.h.cfg.Manager.Detach(s.a)
	s.end()
}

func (s *sseStream) flush() {
	<-s.ready
	if s.a == nil {
		return
	}
	for {
		out, err := s.a.TryNext(context.Background())
		if err != nil {
			s.closeConn()
			return
		}
		if len(out) == 0 {
			return // idle: the next frame wakes a new writer
		}
		bw := getSSEWriter(s.conn)
		n, last := 0, false
		for _, o := range out {
			writeEvent(bw, o)
			n += len(o.JSON)
			last = last || o.Kind == session.KindClose
		}
		s.h.cfg.obs().Sent(SSE, len(out), n)
		s.conn.SetWriteDeadline(time.Now().Add(writeWait))
		if putSSEWriter(bw) != nil || last {
			s.a.Close(&session.Error{Code: session.CodeAbnormal, Reason: "write failed"})
			s.closeConn()
			return
		}
	}
}
