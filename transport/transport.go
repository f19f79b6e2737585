// Package transport moves Ferry frames over HTTP: one http.Handler per transport
// (WebSocket, Server-Sent Events, long-polling), plus negotiation, the upstream POST and
// the dashboard stream of GET /events (an event stream without a session, EventsHandler).
// A transport knows nothing of channels: it authenticates the request, asks its Sessions
// (a *session.Manager) for an attachment, writes what the attachment's Next returns, and
// hands client frames back.
//
// What this package owns: the HTTP side of every endpoint that reads a token (origin
// policy and CORS, see Gate), connection and negotiation limits (Limits), the wire of each
// transport, and the counts of what the transports move (Observer). Errors are answered
// through internal/httpx, as bridge's endpoints answer theirs. Its defaults are the
// Default* constants below and in limits.go.
package transport

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferryrt/ferry/internal/httpx"
	"github.com/ferryrt/ferry/session"
)

// Transport names, as they appear in negotiation and hello frames.
const (
	WebSocket = "websocket"
	SSE       = "sse"
	LongPoll  = "longpoll"
)

// HTTPUpstream is the transport label of frames that arrive by POST /send, the upstream of
// SSE and long-polling, in the Observer's counts.
const HTTPUpstream = "http"

// Authenticator returns the identity a request presents. ok is false when the request
// presents none (no token); err refuses the request (an *session.Error for a specific code).
type Authenticator func(r *http.Request) (id session.Identity, ok bool, err error)

// Sessions is what the transports need of the session layer: the methods of
// *session.Manager they call. Tests drive the handlers with a fake.
type Sessions interface {
	// Params returns the heartbeat, poll hold, TTL, store timeout and size limits that the
	// transports apply and announce.
	Params() session.Params
	Negotiate(ctx context.Context, prev string, id session.Identity, cid string) (session.Negotiated, error)
	Verify(ctx context.Context, cred string, user *string) (session.Claims, error)
	Attach(ctx context.Context, req session.AttachRequest) (*session.Attachment, error)
	// Watch returns a session-less attachment of a dashboard stream (GET /events); Detach
	// ends it.
	Watch(ctx context.Context, req session.WatchRequest) (*session.Attachment, error)
	Detach(a *session.Attachment)
	Park(a *session.Attachment, expect session.Cursor)
	Resume(claims session.Claims, seq uint64, cur session.Cursor) *session.Attachment
	HandleFrame(ctx context.Context, a *session.Attachment, f *session.ClientFrame)
	Upstream(ctx context.Context, c session.Claims, frames []session.ClientFrame) ([]session.Ack, error)
	// Draining reports whether the sessions are shutting down, so that connections kept
	// open between requests are closed.
	Draining() bool
}

// Defaults of Config.
const (
	DefaultMaxBodyBytes  = 1 << 20
	DefaultSSERetry      = 2000 // milliseconds
	DefaultHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout   = 2 * time.Minute
	DefaultCloseGrace    = time.Second
)

// Config is shared by the handlers of one server. Manager is required; the zero value of
// every other field is valid.
type Config struct {
	// Manager runs the sessions: a *session.Manager.
	Manager Sessions
	// Observer counts what the transports move and refuse; default NopObserver.
	Observer Observer
	// Authenticate identifies requests. Nil means anonymous sessions only.
	Authenticate Authenticator
	// AllowAnonymous lets requests without a token negotiate when Authenticate is set.
	AllowAnonymous bool
	// AllowedOrigins lists the origins (scheme://host[:port]) allowed for WebSocket
	// handshakes and cross-origin HTTP requests. An empty list allows only requests
	// without Origin and same-origin requests: the server's own scheme and Host, where
	// the scheme is https on a TLS connection, or what X-Forwarded-Proto says when
	// Limits.TrustForwardedFor is set. "*" allows any origin, but without credentials: a
	// page whose origin matches only through "*" gets CORS answers without
	// Access-Control-Allow-Credentials, and its cookies are hidden from Authenticate, so
	// it must present a token in the Authorization header or the token parameter.
	AllowedOrigins []string
	// Transports lists the transports offered in negotiation; default all three.
	Transports []string
	// MaxBodyBytes bounds POST bodies; default DefaultMaxBodyBytes (1 MiB).
	MaxBodyBytes int64
	// Limiter bounds connections and negotiations; default NewLimiter(Limits{}), which a
	// server should create once and share between its handlers.
	Limiter *Limiter
	// SSERetry is the reconnection hint of SSE streams in milliseconds; default
	// DefaultSSERetry.
	SSERetry int
	Logger   *slog.Logger
	// Streams, if set, counts the WebSocket connections and SSE streams that outlive their
	// handler: an HTTP/1.1 connection is hijacked and served by goroutines of its own,
	// which http.Server.Shutdown does not wait for. A server that drains waits on it.
	Streams *sync.WaitGroup
	// Handoff, if set and served, lets the long-polling handler take over the keep-alive
	// connections that carry polls and give back those that carry anything else; see
	// Handoff and PollHandler.
	Handoff *Handoff
	// HeaderTimeout bounds the reading of a request's header on a connection taken over
	// for polls, like http.Server's ReadHeaderTimeout; default DefaultHeaderTimeout.
	HeaderTimeout time.Duration
	// IdleTimeout closes a taken-over connection that carries no request for this long,
	// like http.Server's IdleTimeout; default DefaultIdleTimeout.
	IdleTimeout time.Duration
	// IO selects pooled I/O (the default) or plain goroutine-per-connection I/O for
	// WebSocket, SSE and long-polling alike; see IOMode.
	IO IOMode
	// CloseGrace is how long a WebSocket, SSE or /events client that is behind (a slow consumer,
	// say) gets to take the write under way and the close frame once its attachment is
	// closed, before the connection is cut; default DefaultCloseGrace.
	CloseGrace time.Duration
}

// outliveHandler is called when a hijacked stream (or a held poll of a taken-over
// connection) leaves its handler; the returned func, which also releases the stream's
// connection slot, must run once when the stream ends.
func (c *Config) outliveHandler(release func()) (done func()) {
	if c.Streams == nil {
		return release
	}
	c.Streams.Add(1)
	return func() {
		release()
		c.Streams.Done()
	}
}

func (c *Config) withDefaults() *Config {
	cc := *c
	if len(cc.Transports) == 0 {
		cc.Transports = []string{WebSocket, SSE, LongPoll}
	}
	if cc.MaxBodyBytes <= 0 {
		cc.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cc.Limiter == nil {
		cc.Limiter = NewLimiter(Limits{})
	}
	if cc.SSERetry <= 0 {
		cc.SSERetry = DefaultSSERetry
	}
	if cc.Logger == nil {
		cc.Logger = slog.New(slog.DiscardHandler)
	}
	if cc.Observer == nil {
		cc.Observer = NopObserver{}
	}
	if cc.HeaderTimeout <= 0 {
		cc.HeaderTimeout = DefaultHeaderTimeout
	}
	if cc.IdleTimeout <= 0 {
		cc.IdleTimeout = DefaultIdleTimeout
	}
	if cc.CloseGrace <= 0 {
		cc.CloseGrace = DefaultCloseGrace
	}
	if auth := cc.Authenticate; auth != nil {
		// Every handler authenticates through this wrapper, so no path can forget it: a
		// cookie is ambient (the browser adds it to any page's request), so it proves
		// nothing about a page that "*" lets in. A token in a header or the query string
		// is not ambient: the page had to hold it.
		cc.Authenticate = func(r *http.Request) (session.Identity, bool, error) {
			if r.Header.Get("Cookie") != "" && cc.origin(r) != originTrusted {
				r = withoutCookies(r)
			}
			return auth(r)
		}
	}
	return &cc
}

// withoutCookies returns a shallow copy of r without its Cookie header.
func withoutCookies(r *http.Request) *http.Request {
	r2 := r.WithContext(r.Context())
	r2.Header = r.Header.Clone()
	r2.Header.Del("Cookie")
	return r2
}

// originTrust is how far the Origin of a request is trusted.
type originTrust int

const (
	// originForeign is refused: 403.
	originForeign originTrust = iota
	// originAny is let in by "*" only: no credentials (cookies, CORS with credentials).
	originAny
	// originTrusted has no Origin (curl, backends), is the server's own origin (scheme
	// and host, see sameOrigin), or is listed in AllowedOrigins: cookies count and CORS
	// allows credentials.
	originTrusted
)

// origin classifies r's Origin against AllowedOrigins.
func (c *Config) origin(r *http.Request) originTrust {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return originTrusted
	}
	wildcard := false
	for _, o := range c.AllowedOrigins {
		if o == "*" {
			wildcard = true
		} else if strings.EqualFold(o, origin) {
			return originTrusted
		}
	}
	if c.sameOrigin(r, origin) {
		return originTrusted
	}
	if wildcard {
		return originAny
	}
	return originForeign
}

// sameOrigin reports whether origin is the server's own: the scheme the client used to
// reach it and its Host. The scheme counts: a page on https://x talking to a plain-HTTP
// node whose Host is x is another origin (a man in the middle could serve it). Behind a
// TLS-terminating proxy the node sees plain HTTP; the proxy's X-Forwarded-Proto is
// believed only with Limits.TrustForwardedFor, as X-Forwarded-For is.
func (c *Config) sameOrigin(r *http.Request, origin string) bool {
	// An Origin is scheme://host[:port], nothing more (RFC 6454 §7).
	oscheme, ohost, ok := strings.Cut(origin, "://")
	if !ok || ohost == "" || strings.ContainsAny(ohost, "/?#@") {
		return false
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if c.Limiter != nil && c.Limiter.cfg.TrustForwardedFor {
		if p := lastListEntry(r.Header.Get("X-Forwarded-Proto")); p != "" {
			scheme = strings.ToLower(p)
		}
	}
	return strings.EqualFold(oscheme, scheme) && strings.EqualFold(hostPort(ohost, scheme), hostPort(r.Host, scheme))
}

// hostPort returns host with the default port of scheme removed, as browsers write an
// Origin ("https://x", never "https://x:443").
func hostPort(host, scheme string) string {
	port := ":80"
	if scheme == "https" {
		port = ":443"
	}
	return strings.TrimSuffix(host, port)
}

// lastListEntry returns the last entry of a comma-separated header value: the one the
// proxy next to the server added.
func lastListEntry(v string) string {
	if i := strings.LastIndexByte(v, ','); i >= 0 {
		v = v[i+1:]
	}
	return strings.TrimSpace(v)
}

// originAllowed reports whether r's Origin may use the server. Requests without Origin
// (curl, backends) and same-origin requests are always allowed.
func (c *Config) originAllowed(r *http.Request) bool { return c.origin(r) != originForeign }

// cors answers the CORS headers of an allowed cross-origin request and reports whether the
// request may go on. A preflight is answered here.
func (c *Config) cors(w http.ResponseWriter, r *http.Request) bool {
	trust := c.origin(r)
	if trust == originForeign {
		c.obs().Rejected("origin")
		writeError(w, session.Errorf(session.CodeForbidden, "origin %.80q not allowed", r.Header.Get("Origin")))
		return false
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		h := w.Header()
		// The origin is echoed (with Vary) for every allowed origin, but credentials are
		// allowed only for trusted ones: one matched by "*" alone would otherwise be a
		// wildcard with credentials, letting any site read answers made with the user's
		// cookies.
		h.Set("Access-Control-Allow-Origin", origin)
		if trust == originTrusted {
			h.Set("Access-Control-Allow-Credentials", "true")
		}
		h.Add("Vary", "Origin")
		if r.Method == http.MethodOptions {
			h.Set("Access-Control-Allow-Methods", "GET, POST")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID")
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return false
		}
	}
	return true
}

// writeError answers err as JSON with the status of its close code (httpx.WriteError).
func writeError(w http.ResponseWriter, err error) { httpx.WriteError(w, err) }

func methodNotAllowed(w http.ResponseWriter, allow string) { httpx.MethodNotAllowed(w, allow) }

func writeJSON(w http.ResponseWriter, v any) { httpx.WriteJSON(w, v) }

// attachRequest verifies the session credential of r (and the identity r presents, if
// any) and parses its cursor. Errors are *session.Error for the client.
func (c *Config) attachRequest(ctx context.Context, r *http.Request, transport string) (session.AttachRequest, error) {
	return c.attachQuery(ctx, r, r.URL.Query(), transport)
}

// attachQuery is attachRequest with r's query parsed already (url.Values, or a poll's
// pollQuery).
func (c *Config) attachQuery(ctx context.Context, r *http.Request, q queryGetter, transport string) (session.AttachRequest, error) {
	claims, err := c.verify(ctx, r, q.Get("session"))
	if err != nil {
		return session.AttachRequest{}, err
	}
	cur, err := session.ParseCursor(q.Get("cursor"), c.Manager.Params().MaxChannels)
	if err != nil {
		return session.AttachRequest{}, err
	}
	var seq uint64
	if v := q.Get("att"); v != "" {
		if seq, err = strconv.ParseUint(v, 10, 64); err != nil {
			return session.AttachRequest{}, session.Errorf(session.CodeBadRequest, "bad att %.20q: want an integer", v)
		}
	}
	return session.AttachRequest{Claims: claims, Transport: transport, Cursor: cur, Hello: true, Heartbeat: true, Seq: seq,
		From: knownTransport(q.Get("from")), Reason: reasonLabel(q.Get("reason")), Remote: r.RemoteAddr}, nil
}

// knownTransport keeps metric labels bounded: what a client claims is only counted when
// it is one of the transports.
func knownTransport(s string) string {
	switch s {
	case WebSocket, SSE, LongPoll:
		return s
	case "":
		return ""
	}
	return "other"
}

// reasonLabel keeps a client-given switch reason short and simple, for metric labels.
func reasonLabel(s string) string {
	if s == "" {
		return ""
	}
	if len(s) > 32 {
		return "other"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return "other"
		}
	}
	return s
}

func (c *Config) obs() Observer { return c.Observer }

func (c *Config) verify(ctx context.Context, r *http.Request, cred string) (session.Claims, error) {
	if cred == "" {
		return session.Claims{}, session.Errorf(session.CodeSessionExpired, "missing session parameter")
	}
	var user *string
	if c.Authenticate != nil {
		id, ok, err := c.Authenticate(r)
		if err != nil {
			return session.Claims{}, err
		}
		if ok {
			user = &id.User
		}
	}
	return c.Manager.Verify(session.WithRemote(ctx, r.RemoteAddr), cred, user)
}

// logFailure logs errors that are the server's fault (a failing store among them, though
// the client is answered 503/4000) and counts the client's mistakes, which are answered,
// not logged.
func (c *Config) logFailure(r *http.Request, what string, err error) {
	var e *session.Error
	if errors.As(err, &e) && !errors.Is(err, session.ErrStoreUnavailable) {
		c.obs().Rejected(rejectReason(err))
		return
	}
	c.Logger.Warn(what+" failed", "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
}

// admitGET checks what every attachment request needs before anything else: CORS, the
// method, and a connection slot. On false it has answered; otherwise the caller must call
// release when the attachment ends.
func (c *Config) admitGET(w http.ResponseWriter, r *http.Request, what string) (release func(), ok bool) {
	if !c.cors(w, r) {
		return nil, false
	}
	if r.Method != http.MethodGet {
		methodNotAllowed(w, "GET")
		return nil, false
	}
	release, err := c.Limiter.acquire(r)
	if err != nil {
		c.logFailure(r, what, err)
		writeError(w, err)
		return nil, false
	}
	return release, true
}

// Gate applies a Config's origin policy and CORS, and its Authenticator, to endpoints
// served outside this package (bridge's /api/history and /api/presence), so that every
// endpoint that reads a token answers foreign pages as the transports do.
type Gate struct{ cfg *Config }

// NewGate returns a Gate for cfg.
func NewGate(cfg Config) *Gate { return &Gate{cfg: cfg.withDefaults()} }

// CORS refuses a foreign Origin with 403, sets the CORS headers of an allowed one and
// answers a preflight. It reports whether the request may go on; if not, it has answered.
func (g *Gate) CORS(w http.ResponseWriter, r *http.Request) bool { return g.cfg.cors(w, r) }

// Authenticate identifies r as the transports do: with Config.Authenticate, which never
// sees the cookies of a page let in by "*" only. Without an Authenticator, every request
// is anonymous (ok false).
func (g *Gate) Authenticate(r *http.Request) (id session.Identity, ok bool, err error) {
	if g.cfg.Authenticate == nil {
		return session.Identity{}, false, nil
	}
	return g.cfg.Authenticate(r)
}
