package transport

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
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

	a := h.attachPlain(w, r, rc)
	if a == nil {
		return
	}
	defer h.cfg.Manager.Detach(a)
	h.cfg.streamFrames(r.Context(), w, rc, a, writeEvent, SSE)
}

// attachPlain attaches the plain path's stream, or answers why not and returns nil. It is
// a function of its own so that its locals leave the stack of an idle stream: below
// 4 KiB, the goroutine's stack shrinks to 8 KiB at a GC (8 KiB less per idle stream).
func (h *SSEHandler) attachPlain(w http.ResponseWriter, r *http.Request, rc *http.ResponseController) *session.Attachment {
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
		return nil
	}
	return a
}

// streamFrames writes what a's Next returns to w until a ends or ctx is cancelled, with
// encode, and counts the frames as sent on transport (none for ""): the plain path of
// /sse and /events, on net/http's handler goroutine.
func (c *Config) streamFrames(ctx context.Context, w http.ResponseWriter, rc *http.ResponseController, a *session.Attachment, encode encodeFunc, transport string) {
	for {
		out, err := a.Next(ctx, time.Time{})
		if err != nil {
			return
		}
		// Before encoding: a batch larger than the writer's buffer reaches the connection
		// while it is encoded, after an idle stream's last deadline has passed.
		rc.SetWriteDeadline(time.Now().Add(writeWait()))
		bytes := 0
		bw := getSSEWriter(w)
		for _, o := range out {
			encode(bw, o)
			bytes += len(o.JSON)
		}
		if transport != "" {
			c.obs().Sent(transport, len(out), bytes)
		}
		if putSSEWriter(bw) != nil || rc.Flush() != nil {
			writeFailed(a)
			return
		}
	}
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
