package bridge

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/ferryrt/ferry/internal/httpx"
	"github.com/ferryrt/ferry/session"
	"github.com/ferryrt/ferry/transport"
)

// serveEvents answers GET {base}/events?channel=a&channel=b with a standard event stream
// that a plain EventSource or curl -N reads with no client library (PROTOCOL.md §5):
//
//	id: a=k3x9a1.42,b=p0q1r2.7      the position of every channel, for Last-Event-ID
//	event: a                        the channel
//	data: {"text":"hi"}             the payload
//
// A reconnect with Last-Event-ID resumes every channel of the stream after its position;
// where history no longer covers the gap, an "event: reset" says so for that channel.
// Heartbeats are comments, which EventSource ignores but which keep proxies from cutting
// an idle stream.
//
// The endpoint reads tokens, cookies included, so it shares the transports' origin
// policy (withCORS) and their connection caps; and, like a session's attachment, a
// stream lives no longer than its identity: every heartbeat checks the token's expiry
// and the Revoked hook, and a lapsed identity ends the stream with "event: close".
//
// r3labs/sse's server is not used here: it keeps one event log per stream in memory and
// replays by its own numeric ids, while Ferry's positions come from the broker's bounded
// history and span several channels; its per-stream unbounded buffering also doesn't meet
// the bounds Ferry promises.
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		httpx.MethodNotAllowed(w, "GET")
		return
	}
	// A stream holds a connection as an SSE attachment does, so it takes a slot of the
	// same caps, before anything else is looked at: a flood costs an HTTP answer only.
	release, ok := s.gate.Acquire(w, r, "events")
	if !ok {
		return
	}
	defer release()
	ctx := r.Context()
	id, err := s.identify(r)
	if err != nil {
		e := session.AsError(err)
		httpx.WriteError(w, e)
		return
	}
	cur, err := eventsCursor(r, s.mgr.Config().MaxChannels)
	if err != nil {
		e := session.AsError(err)
		httpx.WriteError(w, e)
		return
	}
	h := handler{s}
	for _, e := range cur {
		if err := h.Authorize(ctx, session.Claims{User: id.User, Grants: id.Grants}, session.ActSubscribe, e.Channel); err != nil {
			e := session.AsError(err)
			httpx.WriteError(w, httpx.WithStatus(http.StatusForbidden, e))
			return
		}
	}

	heartbeat := s.mgr.Config().Heartbeat
	conn := session.NewStream(s.hub, s.mgr.StreamConfig(heartbeat))
	// OnHeartbeat runs in this goroutine (inside Next), so the close it may cause is the
	// next thing Next returns: the close event, then the end of the stream.
	conn.OnHeartbeat = func() {
		hctx, cancel := context.WithTimeout(ctx, heartbeat)
		defer cancel()
		if e := s.lapsed(hctx, id); e != nil {
			conn.Close(e)
		}
	}
	if !s.trackStream(conn) {
		httpx.WriteError(w, &session.Error{Code: session.CodeShutdown, Reason: "server shutting down"})
		return
	}
	defer s.untrackStream(conn)
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Time{})
	rc.SetReadDeadline(time.Time{}) // a ReadTimeout would cancel the stream's context
	conn.OnClose = func(*session.Error) { rc.SetWriteDeadline(time.Now()) }
	defer conn.Done()
	pos := make(map[string]session.Position, len(cur))
	for _, e := range cur {
		conn.Subscribe(e.Channel, e.Position, false)
		pos[e.Channel] = e.Position
	}

	transport.SetStreamHeaders(w.Header())
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 4096)
	bw.WriteString("retry: 2000\n: ferry events\n\n")
	bw.Flush()
	rc.Flush()
	for {
		out, err := conn.Next(ctx, time.Time{})
		if err != nil {
			return
		}
		for _, o := range out {
			writeChannelEvent(bw, o, cur, pos)
		}
		rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if bw.Flush() != nil || rc.Flush() != nil {
			return
		}
	}
}

// The names of the stream's own events; no channel of these names is streamed.
const (
	eventReset = "reset"
	eventClose = "close"
)

// writeChannelEvent writes one frame of a Conn as an event of the dashboard stream.
func writeChannelEvent(bw *bufio.Writer, o session.Outgoing, cur session.Cursor, pos map[string]session.Position) {
	if m := o.Msg; m != nil {
		pos[m.Channel] = m.Pos
		bw.WriteString("id: ")
		bw.WriteString(cursorID(cur, pos))
		bw.WriteString("\nevent: ")
		// Channel names can't hold CR, LF or NUL (ValidChannel), nor be "reset" or "close"
		// here (eventsCursor): FuzzEventsEncoding.
		bw.WriteString(m.Channel)
		bw.WriteString("\ndata: ")
		if m.Bin != nil {
			b, _ := json.Marshal(m.Bin) // base64 in a JSON string
			bw.Write(b)
		} else {
			bw.Write(m.Payload()) // compact JSON, valid UTF-8: one line
		}
		bw.WriteString("\n\n")
		return
	}
	var f struct {
		T      string `json:"t"`
		Ch     string `json:"ch"`
		Ep     string `json:"ep"`
		Off    uint64 `json:"off"`
		TS     int64  `json:"ts"`
		Code   int    `json:"code"`
		Reason string `json:"reason"`
	}
	json.Unmarshal(o.JSON, &f)
	switch f.T {
	case session.FramePing:
		bw.WriteString(": ping " + strconv.FormatInt(f.TS, 10) + "\n\n")
	case session.FrameReset:
		pos[f.Ch] = session.Position{Epoch: f.Ep, Offset: f.Off}
		b, _ := json.Marshal(map[string]any{"channel": f.Ch, "epoch": f.Ep, "offset": f.Off, "reason": f.Reason})
		bw.WriteString("id: " + cursorID(cur, pos) + "\nevent: " + eventReset + "\ndata: ")
		bw.Write(b)
		bw.WriteString("\n\n")
	case session.FrameSub:
		// The stream's starting position. An event with only an id sets the browser's
		// Last-Event-ID without dispatching anything, so a stream cut before its first
		// message still resumes from here instead of "from now".
		pos[f.Ch] = session.Position{Epoch: f.Ep, Offset: f.Off}
		bw.WriteString("id: " + cursorID(cur, pos) + "\n\n")
	case session.FrameClose:
		b, _ := json.Marshal(map[string]any{"code": f.Code, "reason": f.Reason})
		bw.WriteString("event: " + eventClose + "\ndata: ")
		bw.Write(b)
		bw.WriteString("\n\n")
	}
}

// cursorID is the id of an event: the position of every channel of the stream.
func cursorID(cur session.Cursor, pos map[string]session.Position) string {
	c := make(session.Cursor, len(cur))
	for i, e := range cur {
		c[i] = session.CursorEntry{Channel: e.Channel, Position: pos[e.Channel]}
	}
	return c.String()
}

// eventsCursor reads the channels of a dashboard stream from ?channel= and their positions
// from Last-Event-ID (or ?since=, in the same form, for clients that can't set headers).
// Positions of channels the query doesn't list are ignored: the query decides the stream.
func eventsCursor(r *http.Request, maxChannels int) (session.Cursor, error) {
	q := r.URL.Query()
	names := q["channel"]
	if len(names) == 0 {
		return nil, session.Errorf(session.CodeBadRequest, "no channel: use ?channel=<name> (repeatable)")
	}
	if len(names) > maxChannels {
		return nil, session.Errorf(session.CodeBadRequest, "%d channels, at most %d allowed", len(names), maxChannels)
	}
	cur := make(session.Cursor, 0, len(names))
	seen := map[string]bool{}
	for _, n := range names {
		if err := session.CheckChannel(n); err != nil {
			return nil, err
		}
		if n == eventReset || n == eventClose {
			// Its messages would be events of the same name as the stream's own: whoever
			// may publish to it could forge a reset or a close.
			return nil, session.Errorf(session.CodeBadRequest, "channel %q can't be streamed: its events would read as the stream's own %q events", n, n)
		}
		if !seen[n] {
			seen[n] = true
			cur = append(cur, session.CursorEntry{Channel: n})
		}
	}
	last := r.Header.Get("Last-Event-ID")
	if last == "" {
		last = q.Get("since")
	}
	if last == "" {
		return cur, nil
	}
	prev, err := session.ParseCursor(last, maxChannels)
	if err != nil {
		e := session.AsError(err)
		return nil, session.Errorf(session.CodeBadRequest, "bad Last-Event-ID: %s", e.Reason)
	}
	for _, p := range prev {
		for i := range cur {
			if cur[i].Channel == p.Channel {
				cur[i].Position = p.Position
			}
		}
	}
	return cur, nil
}

// identify returns the identity of a session-less request (dashboards, history), refusing
// anonymous ones unless they are allowed, and lapsed ones as a session's are refused.
func (s *Server) identify(r *http.Request) (session.Identity, error) {
	// The gate hides the cookies of pages let in by "*" only (transport.Config).
	id, ok, err := s.gate.Authenticate(r)
	if err == nil && !ok && s.cfg.Authenticate != nil && !s.cfg.AllowAnonymous {
		err = session.Errorf(session.CodeUnauthorized, "authentication required: send a token (Authorization: Bearer, ?token= or cookie)")
	}
	if err == nil {
		if e := s.lapsed(r.Context(), id); e != nil {
			err = e
		}
	}
	return id, err
}

// lapsed reports why an identity may no longer be served, in the order a session's
// attachment checks it at every heartbeat (session.Manager): its token expired (4006),
// or the Revoked hook says so (4101).
func (s *Server) lapsed(ctx context.Context, id session.Identity) *session.Error {
	if !id.Expires.IsZero() && time.Now().After(id.Expires) {
		return session.ErrTokenExpired
	}
	if s.cfg.Revoked != nil && s.cfg.Revoked(ctx, id.User) {
		return session.ErrRevoked
	}
	return nil
}

// oldestCovered returns the smallest offset p in (lo, top] such that history covers
// everything after p-1, probing the broker by binary search: Since answers "covered or
// not" for any position, which is all a Broker promises.
func oldestCovered(ctx context.Context, b Broker, ch string, top session.Position, lo uint64) (uint64, error) {
	covered := func(after uint64) (bool, error) {
		_, _, ok, err := b.Since(ctx, ch, session.Position{Epoch: top.Epoch, Offset: after}, 1)
		return ok, err
	}
	ok, err := covered(lo)
	if err != nil || ok {
		return lo, err
	}
	hi := top.Offset // covered(top) is always true
	for lo+1 < hi {
		mid := lo + (hi-lo)/2
		ok, err := covered(mid)
		if err != nil {
			return 0, err
		}
		if ok {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi, nil
}
