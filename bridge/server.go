package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferryrt/ferry/bridge/broker"
	"github.com/ferryrt/ferry/bridge/memory"
	"github.com/ferryrt/ferry/session"
	"github.com/ferryrt/ferry/transport"
)

// Config configures a Server. The zero value is valid: an in-memory broker, anonymous
// sessions, default limits, no upstream handler, and a random secret (one node only).
type Config struct {
	// Base is the path prefix of every endpoint; default "/ferry".
	Base string
	// Secret signs session credentials. Every node of a cluster needs the same one; empty
	// means a random secret, so sessions don't survive a restart.
	Secret []byte
	// APIKey enables POST {Base}/api/publish for backends holding it.
	APIKey string
	// AllowedOrigins for WebSocket handshakes and cross-origin requests; see
	// transport.Config.
	AllowedOrigins []string
	// Transports offered to clients; default all three.
	Transports []string
	// Broker shares channels and sessions between nodes; default a memory.Broker with
	// History. The Server closes a broker it created, not one it was given.
	Broker  Broker
	History HistoryConfig
	// MaxSessions bounds the live sessions (negotiated and not expired) of the
	// memory.Broker the Server creates; default memory.DefaultMaxSessions. Beyond it
	// negotiations get 503 with code 4000 (try another node) while live sessions go on. A
	// Broker given above has its own bound (memory.Config.MaxSessions; the Redis broker
	// has none), and setting both is an error.
	MaxSessions int

	Heartbeat time.Duration // default 15 s
	PollHold  time.Duration // default 25 s
	// PollLinger keeps a long-poll attachment subscribed between polls, for the next poll
	// to continue from; default 10 s, negative turns it off (session.Config.PollLinger).
	PollLinger time.Duration
	SessionTTL time.Duration // default 60 s
	// DedupeTTL is how long the upstream dedupe window of a client identity (or of a
	// session without one) lasts after its latest frame; default twice SessionTTL, never
	// less than SessionTTL (session.Config.DedupeTTL).
	DedupeTTL time.Duration
	// StoreTimeout bounds what a request waits for the broker (Redis): its session check,
	// its attachment's announcement, subscriptions and history reads, a negotiation, the
	// dedupe of sent frames. Beyond it the request fails with 503, code 4000 (retry), so
	// a paused Redis holds nothing up for longer; see session.Config.StoreTimeout.
	// Default 5 s.
	StoreTimeout    time.Duration
	MaxMessageBytes int   // default 64 KiB
	MaxChannels     int   // per session; default 128
	QueueMessages   int   // per attachment; default 1024
	QueueBytes      int   // per attachment; default 4 MiB
	MaxBodyBytes    int64 // POST bodies; default 1 MiB
	// Limits bounds connections per node and per client address and the rate of new
	// sessions; see transport.Limits for the defaults. Its Logger defaults to Logger.
	Limits transport.Limits
	// HeaderTimeout and IdleTimeout apply to the keep-alive connections the long-polling
	// handler takes over once Handoff is served, as http.Server's ReadHeaderTimeout and
	// IdleTimeout do to the others; set them to the same values. Default 10 s and 2 min.
	HeaderTimeout time.Duration
	IdleTimeout   time.Duration
	// UpstreamRate and UpstreamBurst bound each session's send and pub frames per second
	// (default 100, burst 200; negative: off). Beyond it frames are refused with 4029.
	UpstreamRate  float64
	UpstreamBurst int

	// Authenticate identifies requests (see JWTAuthenticator); nil means anonymous
	// sessions only.
	Authenticate transport.Authenticator
	// AllowAnonymous lets requests without a token in when Authenticate is set. (Without
	// Authenticate, everyone is anonymous.)
	AllowAnonymous bool
	// Revoked, if set, is asked on every request and every heartbeat whether an
	// identity's sessions must end; they are closed with 4101 within a heartbeat.
	Revoked func(ctx context.Context, user string) bool
	// Authorize decides every subscribe, publish and send; nil means DefaultPolicy with
	// ClientPublish.
	Authorize func(ctx context.Context, r AuthRequest) error
	// ClientPublish lists channel patterns (path.Match syntax, e.g. "room:*") that
	// clients may publish to under the default policy.
	ClientPublish []string
	// OnMessage receives upstream send frames, at most once per (session, seq). Without
	// it, send frames are refused with code 4104.
	OnMessage func(ctx context.Context, m Upstream) error

	// Presence, if set, keeps who is present on the channels matching PresenceChannels
	// (path.Match patterns): sessions subscribed to them join, and their subscribers may
	// also subscribe to "$presence:<channel>" for join and leave events. GET
	// {Base}/api/presence?channel= lists the members. The Server does not close it.
	Presence         Presence
	PresenceChannels []string

	// Metrics, if set, receives Ferry's Prometheus collectors (ferry_*).
	Metrics prometheus.Registerer

	Logger *slog.Logger
}

// AuthRequest is one action to authorize.
type AuthRequest struct {
	Action  session.Action
	Session string   // session id; "" for session-less requests (/events, /api/history)
	User    string   // identity, "" for anonymous
	Grants  []string // channel patterns the identity's token grants
	Channel string   // empty for ActSend
}

// Upstream is a message a client sent to the server (broker.Upstream).
type Upstream = broker.Upstream

// Server is a Ferry server: mount it (it is an http.Handler for everything under Base),
// publish to it, and shut it down. It is safe for concurrent use.
type Server struct {
	cfg     Config
	broker  Broker
	ownsBrk bool
	hub     *Hub
	mgr     *session.Manager
	mux     *http.ServeMux
	log     *slog.Logger
	metrics *metrics // nil without Config.Metrics
	gate    *transport.Gate
	poll    *transport.PollHandler
	handoff *transport.Handoff

	active   sync.WaitGroup
	mu       sync.Mutex
	draining bool
	streams  map[*session.Conn]struct{} // session-less /events streams, closed by Shutdown
}

// trackStream registers a dashboard stream for Shutdown; false if already draining.
func (s *Server) trackStream(c *session.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	if s.streams == nil {
		s.streams = map[*session.Conn]struct{}{}
	}
	s.streams[c] = struct{}{}
	return true
}

func (s *Server) untrackStream(c *session.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.streams, c)
}

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Base == "" {
		cfg.Base = "/ferry"
	}
	cfg.Base = "/" + strings.Trim(cfg.Base, "/")
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	for _, p := range cfg.ClientPublish {
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("bridge: bad ClientPublish pattern %q: %w", p, err)
		}
	}
	if cfg.Broker != nil && cfg.MaxSessions != 0 {
		return nil, errors.New("bridge: MaxSessions applies to the broker the Server creates; bound the given Broker in its own config")
	}
	s := &Server{cfg: cfg, broker: cfg.Broker, log: cfg.Logger}
	if s.broker == nil {
		s.broker = memory.New(memory.Config{History: cfg.History, MaxSessions: cfg.MaxSessions})
		s.ownsBrk = true
	}
	s.hub = NewHub(s.broker, cfg.Logger)
	s.hub.timeout = orDefault(cfg.StoreTimeout, session.DefaultStoreTimeout)
	var observer session.Observer
	if cfg.Metrics != nil {
		s.metrics = newMetrics(cfg.Metrics, s)
		observer = s.metrics
	}
	var revoked func(context.Context, session.Claims) bool
	if cfg.Revoked != nil {
		revoked = func(ctx context.Context, c session.Claims) bool { return cfg.Revoked(ctx, c.User) }
	}
	var presence session.PresenceHook
	if cfg.Presence != nil {
		presence = presenceHook{s}
	}
	s.mgr = session.NewManager(session.Config{
		Presence:        presence,
		Revoked:         revoked,
		Observer:        observer,
		Signer:          session.NewSigner(cfg.Secret),
		Store:           s.broker,
		Source:          s.hub,
		Handler:         handler{s},
		Logger:          cfg.Logger,
		Heartbeat:       cfg.Heartbeat,
		PollHold:        cfg.PollHold,
		PollLinger:      cfg.PollLinger,
		SessionTTL:      cfg.SessionTTL,
		DedupeTTL:       cfg.DedupeTTL,
		StoreTimeout:    cfg.StoreTimeout,
		MaxMessageBytes: cfg.MaxMessageBytes,
		MaxChannels:     cfg.MaxChannels,
		QueueMessages:   cfg.QueueMessages,
		QueueBytes:      cfg.QueueBytes,
		UpstreamRate:    cfg.UpstreamRate,
		UpstreamBurst:   cfg.UpstreamBurst,
	})
	if err := s.hub.Start(s.mgr.Supersede); err != nil {
		return nil, fmt.Errorf("bridge: start broker: %w", err)
	}

	tc := transport.Config{
		Manager:        s.mgr,
		Authenticate:   cfg.Authenticate,
		AllowAnonymous: cfg.AllowAnonymous,
		AllowedOrigins: cfg.AllowedOrigins,
		Transports:     cfg.Transports,
		MaxBodyBytes:   cfg.MaxBodyBytes,
		Limiter:        transport.NewLimiter(limitsWithLogger(cfg.Limits, cfg.Logger)),
		Logger:         cfg.Logger,
		Streams:        &s.active,
		Handoff:        transport.NewHandoff(),
		HeaderTimeout:  cfg.HeaderTimeout,
		IdleTimeout:    cfg.IdleTimeout,
	}
	s.handoff = tc.Handoff
	s.poll = transport.NewPoll(tc)
	s.gate = transport.NewGate(tc)
	s.mux = http.NewServeMux()
	b := cfg.Base
	s.mux.Handle(b+"/negotiate", transport.NewNegotiate(tc))
	s.mux.Handle(b+"/ws", transport.NewWebSocket(tc))
	s.mux.Handle(b+"/sse", transport.NewSSE(tc))
	s.mux.Handle(b+"/poll", s.poll)
	s.mux.Handle(b+"/send", transport.NewSend(tc))
	s.mux.HandleFunc(b+"/api/publish", s.servePublish)
	s.mux.HandleFunc(b+"/api/history", s.withCORS(s.serveHistory))
	s.mux.HandleFunc(b+"/events", s.withCORS(s.serveEvents))
	if cfg.Presence != nil {
		s.mux.HandleFunc(b+"/api/presence", s.withCORS(s.servePresence))
	}
	mountClient(s.mux, b)
	return s, nil
}

// Base returns the path prefix the server answers under.
func (s *Server) Base() string { return s.cfg.Base }

// Manager returns the session manager, for metrics and tests.
func (s *Server) Manager() *session.Manager { return s.mgr }

// Broker returns the broker the server uses.
func (s *Server) Broker() Broker { return s.broker }

// ServeHTTP serves every endpoint under Base.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, `{"code":%d,"reason":"server shutting down"}`+"\n", session.CodeShutdown)
		return
	}
	s.active.Add(1)
	s.mu.Unlock()
	defer s.active.Done()
	s.mux.ServeHTTP(w, r)
}

// Handoff returns the listener of connections the long-polling handler gives back to
// net/http. Serve it with the http.Server that serves s, beside its own listener:
//
//	go hs.Serve(srv.Handoff())
//
// Served, it lets each plain HTTP/1.1 keep-alive connection that carries polls be served
// without net/http's goroutine and buffers while a poll is held or between polls (about
// 8 KiB per polling client instead of 40, in docs/BENCHMARKS.md); any other request on it
// goes back to hs through this listener, so every handler still sees it. Unserved, polls
// stay on net/http. http.Server.Shutdown closes it.
//
// A connection taken over keeps its later polls from handlers wrapped around s: a
// middleware that must see every request should run s without serving Handoff.
func (s *Server) Handoff() net.Listener { return s.handoff }

// Mount registers the server on mux under Base.
func (s *Server) Mount(mux *http.ServeMux) {
	mux.Handle(s.cfg.Base+"/", s)
}

// ErrInvalidUTF8 is matched (errors.Is) by the error of a publish whose JSON payload holds
// bytes that are not UTF-8. Such a payload is refused at every way into a channel: it
// would reach browsers in WebSocket text frames, which must be UTF-8, and fail the
// connection of every subscriber. It is session.ErrInvalidUTF8, code 1007.
var ErrInvalidUTF8 = session.ErrInvalidUTF8

// Publish publishes data to channel and returns its position. data is marshalled as JSON
// (a json.RawMessage or []byte holding JSON is used as it is, after validation).
//
// A payload that is not valid JSON, is larger than MaxMessageBytes or holds bytes that
// are not UTF-8 in its strings is refused with a *session.Error naming the problem (codes
// 4100, 1009 and 1007; errors.Is(err, ErrInvalidUTF8) for the last). encoding/json
// replaces invalid UTF-8 in Go strings with U+FFFD when it marshals them, so only raw
// JSON can carry it. A JSON escape such as \udc00 (a lone surrogate) is ASCII and passes
// as written. Bytes that are not text travel as binary payloads (the Redis stream's
// bin field, a client's b).
func (s *Server) Publish(ctx context.Context, channel string, data any) (session.Position, error) {
	if err := session.CheckChannel(channel); err != nil {
		return session.Position{}, err
	}
	var raw []byte
	switch v := data.(type) {
	case json.RawMessage:
		raw = v
	case []byte:
		raw = v
	default:
		b, err := json.Marshal(data)
		if err != nil {
			return session.Position{}, fmt.Errorf("bridge: publish to %s: %w", channel, err)
		}
		raw = b
	}
	payload, err := session.CompactPayload(raw, s.mgr.Config().MaxMessageBytes)
	if err != nil {
		return session.Position{}, err
	}
	m, err := s.publish(ctx, channel, payload, nil)
	if err != nil {
		return session.Position{}, fmt.Errorf("bridge: publish to %s: %w", channel, err)
	}
	return m.Pos, nil
}

// publish is the one path into the broker, measured.
func (s *Server) publish(ctx context.Context, channel string, data json.RawMessage, bin []byte) (*session.Message, error) {
	start := time.Now()
	m, err := s.broker.Publish(ctx, channel, data, bin)
	if s.metrics != nil {
		if err != nil {
			s.metrics.publishErrors.Inc()
		} else {
			s.metrics.publishSeconds.Observe(time.Since(start).Seconds())
		}
	}
	return m, err
}

// SessionChannel is the channel of messages to one session.
func SessionChannel(sid string) string { return "$session:" + sid }

// UserChannel is the channel of messages to every session of one identity.
func UserChannel(user string) string { return "$user:" + user }

// PublishToSession publishes data to the channel of session sid; data is checked as by
// Publish.
func (s *Server) PublishToSession(ctx context.Context, sid string, data any) (session.Position, error) {
	return s.Publish(ctx, SessionChannel(sid), data)
}

// PublishToUser publishes data to the channel of every session of user; data is checked
// as by Publish.
func (s *Server) PublishToUser(ctx context.Context, user string, data any) (session.Position, error) {
	return s.Publish(ctx, UserChannel(user), data)
}

// Ready reports whether the server can serve: not draining, broker ready.
func (s *Server) Ready(ctx context.Context) error {
	s.mu.Lock()
	draining := s.draining
	s.mu.Unlock()
	if draining {
		return errors.New("bridge: draining")
	}
	return s.broker.Ready(ctx)
}

// Shutdown drains the server: new requests get 503, every attachment is closed with code
// 4003 (clients reconnect elsewhere or after the restart, and resume), and Shutdown waits
// for the requests in flight to end or for ctx. It closes the broker if the server created
// it.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	streams := make([]*session.Conn, 0, len(s.streams))
	for c := range s.streams {
		streams = append(streams, c)
	}
	s.mu.Unlock()
	s.mgr.Shutdown(session.ErrShutdown)
	s.poll.Shutdown()
	for _, c := range streams {
		c.Close(session.ErrShutdown)
	}
	done := make(chan struct{})
	go func() {
		s.active.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("bridge: shutdown: %w", ctx.Err())
	}
	if s.ownsBrk {
		s.broker.Close()
	}
	return err
}

// DefaultPolicy is the authorization used when Config.Authorize is nil:
//   - subscribe: any channel not starting with "$", the session's own "$session:<sid>",
//     for an identified session "$user:<user>", and channels its token grants;
//   - publish: channels matching one of the clientPublish patterns (never "$" channels),
//     and channels the token grants;
//   - send: allowed (refused with 4104 when there is no OnMessage handler).
//
// A token's grants (the JWT "channels" claim) widen the policy; they can open "$"
// channels, which is how a backend lets one identity read another's channel.
func DefaultPolicy(clientPublish []string) func(context.Context, AuthRequest) error {
	return func(_ context.Context, r AuthRequest) error {
		switch r.Action {
		case session.ActSubscribe:
			if !strings.HasPrefix(r.Channel, "$") || (r.Session != "" && r.Channel == SessionChannel(r.Session)) ||
				(r.User != "" && r.Channel == UserChannel(r.User)) || granted(r.Grants, r.Channel) {
				return nil
			}
		case session.ActPublish:
			if granted(r.Grants, r.Channel) || (!strings.HasPrefix(r.Channel, "$") && granted(clientPublish, r.Channel)) {
				return nil
			}
		case session.ActSend:
			return nil
		}
		return session.Errorf(session.CodeForbidden, "%s %q not allowed", r.Action, r.Channel)
	}
}

// handler implements session.Handler with the server's hooks.
type handler struct{ s *Server }

func (h handler) Authorize(ctx context.Context, c session.Claims, act session.Action, channel string) error {
	authz := h.s.cfg.Authorize
	if authz == nil {
		authz = DefaultPolicy(h.s.cfg.ClientPublish)
	}
	if act == session.ActSend && h.s.cfg.OnMessage == nil {
		return &session.Error{Code: session.CodeNoHandler, Reason: "this server takes no upstream messages"}
	}
	// Join and leave events of a channel are for those who may subscribe to the channel.
	if inner, ok := strings.CutPrefix(channel, "$presence:"); ok && act == session.ActSubscribe {
		if !h.s.presenceOn(inner) {
			return session.Errorf(session.CodeForbidden, "no presence on %q", inner)
		}
		channel = inner
	}
	return authz(ctx, AuthRequest{Action: act, Session: c.SID, User: c.User, Grants: c.Grants, Channel: channel})
}

func (h handler) Send(ctx context.Context, c session.Claims, f *session.ClientFrame) error {
	return h.s.cfg.OnMessage(ctx, Upstream{Session: c.SID, User: c.User, Client: c.CID, Seq: f.Seq, Data: f.Data, Binary: f.Bin})
}

func (h handler) Publish(ctx context.Context, _ session.Claims, f *session.ClientFrame) (session.Position, error) {
	m, err := h.s.publish(ctx, f.Ch, f.Data, f.Bin)
	if err != nil {
		return session.Position{}, err
	}
	return m.Pos, nil
}

// limitsWithLogger gives l the server's logger unless it has its own.
func limitsWithLogger(l transport.Limits, log *slog.Logger) transport.Limits {
	if l.Logger == nil {
		l.Logger = log
	}
	return l
}
