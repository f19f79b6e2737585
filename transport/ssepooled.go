package transport

// The pooled I/O of an event stream, /sse and /events alike (Config.IO, IOPooled): an
// HTTP/1.1 stream is served on the hijacked connection, where an idle one holds no
// goroutine. SSEHandler.ServeHTTP in sse.go and EventsHandler.ServeHTTP in events.go are
// the plain path (net/http's handler goroutine), which serves the stream wherever this
// one can't, and in the plain mode; TestSSEModesAnswerTheSameBytes and
// TestEventsModesAnswerTheSameBytes in bridge check that both write the same events.

import (
	"bufio"
	"bytes"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/ferryrt/ferry/session"
	"github.com/ferryrt/ferry/transport/internal/beat"
	"github.com/ferryrt/ferry/transport/internal/netpoll"
	"github.com/ferryrt/ferry/transport/internal/stream"
)

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
	s := newSSEStream(h.cfg, conn, writeEvent, SSE)
	req.OnClose = func(*session.Error) { conn.SetWriteDeadline(time.Now().Add(h.cfg.CloseGrace)) }
	req.OnWake = s.writer.Wake // held until the writer starts, once the head is out
	// The request's context stays valid after Hijack until this handler returns.
	a, err := h.cfg.Manager.Attach(r.Context(), req)
	b := streamHead(hdr, "retry: "+strconv.Itoa(h.cfg.SSERetry)+"\n\n")
	if err != nil {
		h.cfg.logFailure(r, "sse attach", err)
		e := session.AsError(err)
		bw := getSSEWriter(conn)
		bw.Write(b)
		writeEvent(bw, (&session.ServerFrame{T: session.FrameClose, Code: e.Code, Reason: e.Reason}).Encode())
		conn.SetWriteDeadline(time.Now().Add(writeWait()))
		putSSEWriter(bw)
		conn.Close()
		release()
		return true
	}
	s.a = a
	s.wd.set(conn, time.Now().Add(writeWait())) // through wd: Try keeps it ahead
	if _, err := conn.Write(b); err != nil {
		writeFailed(a)
	}
	s.writer.Start(h.cfg.writerPool(conn), s)
	s.start(h.cfg.outliveHandler(release))
	return true
}

// streamHead is the response head of a hijacked stream with its headers hdr, followed by
// the stream's first bytes.
func streamHead(hdr http.Header, first string) []byte {
	SetStreamHeaders(hdr)
	hdr.Set("Connection", "close") // the stream ends with the connection
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 200 OK\r\n")
	hdr.Write(&b)
	b.WriteString("\r\n")
	b.WriteString(first)
	return b.Bytes()
}

// sseStream is a stream on a hijacked connection: a session's (/sse) or a watch's
// (/events), which differ only in how they encode frames. It reads like the plain path
// (Config.streamFrames): a writer that writes what the attachment has (Write), a
// heartbeat, and a teardown once the client leaves.
//
// Who runs them is stream's, as for a WebSocket session. A client sends nothing after its
// request, so reading only notices it leaving: the stream.Reader's poller reports that
// without a goroutine (a reader goroutine blocks in Read where the connection can't be
// watched). The stream.Writer runs only while there are frames: as a task of the pool,
// which encodes a batch into one buffer and writes it with one non-blocking write (Try),
// or, where writes can't be tried (TLS), on a goroutine of its own (Write). Heartbeats
// come from a wheel (beat), as a WebSocket session's do.
type sseStream struct {
	cfg    *Config
	encode encodeFunc
	tr     string // the transport its frames are counted as sent on; "" counts none
	conn   net.Conn
	a      *session.Attachment // set before the writer starts
	closed chan struct{}       // the connection is closed
	hb     *beat.Beat
	end    func() // releases the connection slot once the stream is torn down
	once   sync.Once
	writer stream.Writer[session.Outgoing] // owns the writing: wake-ups, pool or goroutine
	reader stream.Reader                   // owns the reading, and with it the teardown
	wd     coarseDeadline                  // the writer's deadline, set before every write
	tw     netpoll.Writer                  // the pool's non-blocking writes
}

// newSSEStream returns the stream on conn of an attachment still to be set (a, before
// the writer starts), whose frames encode writes and which counts them as sent on tr.
func newSSEStream(cfg *Config, conn net.Conn, encode encodeFunc, tr string) *sseStream {
	return &sseStream{cfg: cfg, encode: encode, tr: tr, conn: conn, closed: make(chan struct{})}
}

// Finish closes the connection, once the writing is over. The reading stops first (a
// descriptor must leave the epoll set before it is closed), and its end tears the stream
// down.
func (s *sseStream) Finish() {
	s.once.Do(func() {
		s.reader.Stop()
		s.conn.Close()
		close(s.closed)
	})
}

func (s *sseStream) start(end func()) {
	s.end = end
	every := s.cfg.Manager.Params().Heartbeat
	s.hb = heartbeats(every).Add(func(due bool) {
		select {
		case <-s.closed:
		default:
			if due {
				s.a.PingLater() // flushed a tick later, if no data carried it
			} else {
				s.a.Flush()
			}
		}
	})
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
	s.cfg.Manager.Detach(s.a)
	s.end()
}

// Next takes the attachment's next batch, for the writer.
func (s *sseStream) Next(local bool) ([]session.Outgoing, error) { return nextBatch(s.a, local) }

// Write writes one batch, one event per frame in one write, and reports whether the
// stream goes on: not after the close frame, which ends it.
func (s *sseStream) Write(out []session.Outgoing) bool {
	// Before encoding: a batch larger than the writer's buffer reaches the connection while
	// it is encoded, and the deadline left by the last blocking write has long passed when
	// the pool's non-blocking writes (which need none) came between.
	s.wd.set(s.conn, time.Now().Add(writeWait()))
	bw := getSSEWriter(s.conn)
	last := s.encodeBatch(bw, out)
	if putSSEWriter(bw) != nil || last {
		writeFailed(s.a)
		return false
	}
	return true
}

// encodeBatch encodes out into bw, counts it as sent, and reports whether it ends with
// the close frame.
func (s *sseStream) encodeBatch(bw *bufio.Writer, out []session.Outgoing) (last bool) {
	n := 0
	for _, o := range out {
		s.encode(bw, o)
		n += len(o.JSON)
		last = last || o.Kind == session.KindClose
	}
	if s.tr != "" {
		s.cfg.obs().Sent(s.tr, len(out), n)
	}
	return last
}

// MayWait reports whether a batch may wait (see batchMayWait): the writer writes it off
// the pool. 64 bytes a frame: the id, the event name and the field names around it.
func (s *sseStream) MayWait(out []session.Outgoing) bool { return batchMayWait(out, 64) }

// Try writes a batch on a pool worker (one MayWait refused): encoded into one buffer (a
// corkConn's, lent for the batch), with one non-blocking write. It returns what the
// kernel didn't take.
func (s *sseStream) Try(out []session.Outgoing) (rest []byte, ok bool) {
	buf := corkPool.Get().(*[]byte)
	bw := getSSEWriter((*appendWriter)(buf))
	s.encodeBatch(bw, out)   // never the close: MayWait
	putSSEWriter(bw)         // into buf: never fails
	err := s.wd.keep(s.conn) // raw writes fail past a deadline left by a blocking write
	n := 0
	if err == nil {
		n, err = s.tw.TryWrite(s.conn, *buf)
	}
	if err == nil && n < len(*buf) {
		rest = append([]byte(nil), (*buf)[n:]...)
	}
	if cap(*buf) <= maxCork {
		*buf = (*buf)[:0]
		corkPool.Put(buf)
	}
	if err != nil {
		writeFailed(s.a)
		return nil, false
	}
	return rest, true
}

// WriteRest writes what the kernel didn't take of a batch, waiting, and reports whether
// the stream goes on.
func (s *sseStream) WriteRest(rest []byte) bool {
	s.wd.set(s.conn, time.Now().Add(writeWait()))
	if _, err := s.conn.Write(rest); err != nil {
		writeFailed(s.a)
		return false
	}
	return true
}

// appendWriter is an io.Writer that appends to the slice it points to.
type appendWriter []byte

func (w *appendWriter) Write(p []byte) (int, error) {
	*w = append(*w, p...)
	return len(p), nil
}
