package transport

import (
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/ferryrt/ferry/internal/httpx"
	"github.com/ferryrt/ferry/session"
)

// Events is the label of GET /events in logs and in the Limiter's refusals.
const Events = "events"

// EventsHandler serves GET /events?channel=a&channel=b: the channels' messages as a
// standard event stream that a plain EventSource or curl -N reads with no session and no
// client library (PROTOCOL.md §5; the encoding is channelEvents'). A reconnect with
// Last-Event-ID (or a first connection with ?since=, in the same form) resumes every
// channel of the stream after its position; where history no longer covers the gap, an
// "event: reset" says so for that channel. Heartbeats are comments, which EventSource
// ignores but which keep proxies from cutting an idle stream.
//
// It is served as /sse is: behind the same origin policy and CORS, in a slot of the same
// connection caps, on the same I/O (pooled, the hijacked connection with no goroutine
// while idle; plain, net/http's handler goroutine), counted in Config.Streams and closed
// by a drain. The stream is a watch of the Manager (session.Manager.Watch), which
// authorizes its channels like subscriptions and, like a session's attachment, lets it
// live no longer than its identity: a token that expires or is revoked ends the stream
// with "event: close" at the next heartbeat.
//
// Errors before the stream starts are answered with their HTTP status (an EventSource
// that gets one stops): 400 for a bad query or Last-Event-ID, 401 without a required
// token or with a lapsed one, 403 for a channel the identity may not read, 503 while
// draining or full.
//
// r3labs/sse's server is not used here: it keeps one event log per stream in memory and
// replays by its own numeric ids, while Ferry's positions come from the broker's bounded
// history and span several channels; its per-stream unbounded buffering also doesn't meet
// the bounds Ferry promises.
type EventsHandler struct{ cfg *Config }

// NewEvents returns the /events handler.
func NewEvents(cfg Config) *EventsHandler { return &EventsHandler{cfg: cfg.withDefaults()} }

// ServeHTTP answers GET /events with the stream, or with the error that refuses it.
func (h *EventsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// A stream holds a connection as an SSE attachment does, so it takes a slot of the
	// same caps before anything else is looked at: a flood costs an HTTP answer only.
	release, ok := h.cfg.admitGET(w, r, Events)
	if !ok {
		return
	}
	rc := http.NewResponseController(w)
	cut := &writeCut{set: rc.SetWriteDeadline, grace: h.cfg.CloseGrace}
	a, cur, err := h.watch(r, cut)
	if err != nil {
		release()
		var refused *session.Refusal
		if errors.As(err, &refused) {
			err = httpx.WithStatus(http.StatusForbidden, err)
		}
		writeError(w, err)
		return
	}
	enc := newChannelEvents(cur)
	if r.ProtoMajor == 1 && h.cfg.pooled() && h.serveHijacked(w, a, enc, cut, release) {
		return
	}
	defer release()
	defer h.cfg.Manager.Detach(a)
	// A stream lives longer than any server WriteTimeout or ReadTimeout (whose expiry
	// would cancel the request); each write sets its own deadline.
	rc.SetWriteDeadline(time.Time{})
	rc.SetReadDeadline(time.Time{})
	SetStreamHeaders(w.Header())
	w.WriteHeader(http.StatusOK)
	bw := getSSEWriter(w)
	bw.WriteString(eventsPrelude(h.cfg.SSERetry))
	if putSSEWriter(bw) != nil || rc.Flush() != nil {
		return
	}
	h.cfg.streamFrames(r.Context(), w, rc, a, enc.write, "")
}

// watch identifies r, reads its channels and their positions, and asks the Manager for
// the watch of them, which starts at the positions of cur; cut bounds a write stuck on a
// client that stopped reading once the watch closes.
func (h *EventsHandler) watch(r *http.Request, cut *writeCut) (a *session.Attachment, cur session.Cursor, err error) {
	id, err := h.cfg.identify(r)
	if err != nil {
		return nil, nil, err
	}
	cur, err = eventsCursor(r, h.cfg.Manager.Params().MaxChannels)
	if err != nil {
		return nil, nil, err
	}
	a, err = h.cfg.Manager.Watch(r.Context(), session.WatchRequest{Identity: id, Cursor: cur, Transport: Events,
		OnClose: cut.cut, Remote: r.RemoteAddr})
	return a, cur, err
}

// serveHijacked serves the stream of a on the hijacked connection, as SSEHandler's does
// (sseStream): once the stream has started, an idle one holds no goroutine. It reports
// false, having done nothing, when the connection can't be hijacked.
func (h *EventsHandler) serveHijacked(w http.ResponseWriter, a *session.Attachment, enc *channelEvents, cut *writeCut, release func()) bool {
	hdr := w.Header().Clone()
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return false
	}
	conn.SetReadDeadline(time.Time{})
	cut.use(conn.SetWriteDeadline)
	s := newSSEStream(h.cfg, conn, enc.write, "")
	s.a = a
	s.wd.set(conn, time.Now().Add(writeWait())) // through wd: Try keeps it ahead
	if _, err := conn.Write(streamHead(hdr, eventsPrelude(h.cfg.SSERetry))); err != nil {
		writeFailed(a)
	}
	s.writer.Start(h.cfg.writerPool(conn), s)
	s.start(h.cfg.outliveHandler(release))
	// The watch was made before the connection was known: from here on its frames wake
	// the stream's writer, and what came meanwhile is written now.
	a.SetOnWake(s.writer.Wake)
	s.writer.Wake()
	return true
}

// writeCut bounds a write stuck on a client that stopped reading, when a watch closes
// (session.Stream.OnClose): through net/http while its handler serves the stream, through
// the hijacked connection once it has taken over.
type writeCut struct {
	mu    sync.Mutex
	set   func(time.Time) error
	grace time.Duration // Config.CloseGrace
}

func (c *writeCut) cut(*session.Error) {
	c.mu.Lock()
	c.set(time.Now().Add(c.grace))
	c.mu.Unlock()
}

// use moves the cut to set, before the handler that served the old one returns.
func (c *writeCut) use(set func(time.Time) error) {
	c.mu.Lock()
	c.set = set
	c.mu.Unlock()
}

// identify returns the identity r presents, for a request without a session: anonymous
// when it presents none, which is refused when an Authenticator is set without
// AllowAnonymous.
func (c *Config) identify(r *http.Request) (session.Identity, error) {
	if c.Authenticate == nil {
		return session.Identity{}, nil
	}
	id, ok, err := c.Authenticate(r)
	if err == nil && !ok && !c.AllowAnonymous {
		err = session.Errorf(session.CodeUnauthorized, "authentication required: send a token (Authorization: Bearer, ?token= or cookie)")
	}
	return id, err
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
