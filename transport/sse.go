package transport

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferryrt/ferry/session"
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
	// Pooled, an HTTP/1.1 stream moves to the hijacked connection, which then owns the
	// connection slot; see serveHijacked (ssepooled.go). What follows is the plain path.
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
	req.OnClose = func(*session.Error) { rc.SetWriteDeadline(time.Now().Add(h.cfg.CloseGrace)) }
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
