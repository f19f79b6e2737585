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
	"github.com/ferryrt/ferry/internal/httpx"
	"github.com/ferryrt/ferry/session"
	"github.com/ferryrt/ferry/transport"
)

// DefaultBase is the path prefix of the endpoints when Config.Base is empty.
const DefaultBase = "/ferry"

// Config configures a Server. The zero value is valid: an in-memory broker, anonymous
// sessions, default limits, no upstream handler, and a random secret (one node only).
type Config struct {
	// Base is the path prefix of every endpoint; default DefaultBase.
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

	// The session settings below are session.Config's, passed through unchanged
	// (sessionConfig): that package documents each one and applies its default (the
	// session.Default* constants). bridge applies none of its own.
	Heartbeat       time.Duration // session.Config.Heartbeat
	PollHold        time.Duration // session.Config.PollHold
	PollLinger      time.Duration // session.Config.PollLinger; negative: off
	SessionTTL      time.Duration // session.Config.SessionTTL
	DedupeTTL       time.Duration // session.Config.DedupeTTL
	StoreTimeout    time.Duration // session.Config.StoreTimeout; also bounds the Hub's broker calls
	MaxMessageBytes int           // session.Config.MaxMessageBytes; also bounds Publish
	MaxChannels     int           // session.Config.MaxChannels
	QueueMessages   int           // session.Config.QueueMessages
	QueueBytes      int           // session.Config.QueueBytes
	UpstreamRate    float64       // session.Config.UpstreamRate; negative: off
	UpstreamBurst   int           // session.Config.UpstreamBurst

	// The HTTP settings below are transport.Config's and transport.Limits', passed
	// through likewise; transport applies their defaults (transport.Default*).
	MaxBodyBytes int64 // transport.Config.MaxBodyBytes: POST bodies
	// Limits bounds connections per node and per client address and the rate of new
	// sessions; see transport.Limits. Its Logger defaults to Logger.
	Limits transport.Limits
	// HeaderTimeout and IdleTimeout apply to the keep-alive connections the long-polling
	// handler takes over once Handoff is served, as http.Server's ReadHeaderTimeout and
	// IdleTimeout do to the others; set them to the same values (transport.Config).
	HeaderTimeout time.Duration
	IdleTimeout   time.Duration
	// IO selects pooled I/O (default) or plain goroutine-per-connection I/O for every
	// transport; see transport.IOMode.
	IO transport.IOMode
	// CloseGrace is transport.Config.CloseGrace: how long a client that is behind gets
	// to take the close frame once its attachment is closed.
	CloseGrace time.Duration

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

	// Whether the server drains is the Manager's state (Manager.Draining), which
	// transports read too. mu orders it against active: a request that found the
	// Manager not draining has joined active before Shutdown takes mu and waits.
	active sync.WaitGroup
	mu     sync.Mutex
}

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Base == "" {
		cfg.Base = DefaultBase
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
	// metrics counts both what sessions do and what the transports move.
	var observer session.Observer
	var tobserver transport.Observer
	if cfg.Metrics != nil {
		s.metrics = newMetrics(cfg.Metrics, s)
		observer, tobserver = s.metrics, s.metrics
	}
	var revoked func(context.Context, session.Claims) bool
	if cfg.Revoked != nil {
		revoked = func(ctx context.Context, c session.Claims) bool { return cfg.Revoked(ctx, c.User) }
	}
	var presence session.PresenceHook
	if cfg.Presence != nil {
		presence = presenceHook{s}
	}
	sc := cfg.sessionConfig()
	sc.Presence, sc.Revoked, sc.Observer = presence, revoked, observer
	sc.Signer, sc.Store, sc.Source, sc.Handler, sc.Logger = session.NewSigner(cfg.Secret), s.broker, s.hub, handler{s}, cfg.Logger
	s.mgr = session.NewManager(sc)
	s.hub.timeout = s.mgr.Params().StoreTimeout
	if err := s.hub.Start(s.mgr.Supersede); err != nil {
		return nil, fmt.Errorf("bridge: start broker: %w", err)
	}

	tc := transport.Config{
		Manager:        s.mgr,
		Observer:       tobserver,
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
		IO:             cfg.IO,
		CloseGrace:     cfg.CloseGrace,
	}
	s.mount(tc)
	return s, nil
}

// The transports drive the Manager through their Sessions interface.
var _ transport.Sessions = (*session.Manager)(nil)

// mount routes every endpoint under Base: the transports' own handlers, and the others
// behind the same origin and CORS gate (withCORS), so that every endpoint answers a
// foreign page, and every error, the same way.
func (s *Server) mount(tc transport.Config) {
	s.handoff = tc.Handoff
	s.poll = transport.NewPoll(tc)
	s.gate = transport.NewGate(tc)
	s.mux = http.NewServeMux()
	b := s.cfg.Base
	s.mux.Handle(b+"/negotiate", transport.NewNegotiate(tc))
	s.mux.Handle(b+"/ws", transport.NewWebSocket(tc))
	s.mux.Handle(b+"/sse", transport.NewSSE(tc))
	s.mux.Handle(b+"/poll", s.poll)
	s.mux.Handle(b+"/send", transport.NewSend(tc))
	s.mux.HandleFunc(b+"/api/publish", s.withCORS(s.servePublish))
	s.mux.HandleFunc(b+"/api/history", s.withCORS(s.serveHistory))
	s.mux.Handle(b+"/events", transport.NewEvents(tc))
	if s.cfg.Presence != nil {
		s.mux.HandleFunc(b+"/api/presence", s.withCORS(s.servePresence))
	}
	mountClient(s.mux, b)
}

// identify returns the identity of a session-less request (history, presence), refusing
// anonymous ones unless they are allowed, and lapsed ones as a session's are refused.
// (/events identifies its requests in transport, the same way.)
func (s *Server) identify(r *http.Request) (session.Identity, error) {
	// The gate hides the cookies of pages let in by "*" only (transport.Config).
	id, ok, err := s.gate.Authenticate(r)
	if err == nil && !ok && s.cfg.Authenticate != nil && !s.cfg.AllowAnonymous {
		err = session.Errorf(session.CodeUnauthorized, "authentication required: send a token (Authorization: Bearer, ?token= or cookie)")
	}
	if err == nil {
		err = s.mgr.Lapsed(r.Context(), id)
	}
	return id, err
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
	if s.mgr.Draining() {
		s.mu.Unlock()
		w.Header().Set("Retry-After", "1")
		httpx.WriteError(w, &session.Error{Code: session.CodeShutdown, Reason: "server shutting down"})
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
	payload, err := session.CompactPayload(raw, s.mgr.Params().MaxMessageBytes)
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
	if s.mgr.Draining() {
		return errors.New("bridge: draining")
	}
	return s.broker.Ready(ctx)
}

// Shutdown drains the server: new requests get 503, every attachment is closed with code
// 4003 (clients reconnect elsewhere or after the restart, and resume), and Shutdown waits
// for the requests in flight to end or for ctx. It closes the broker if the server created
// it.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mgr.Shutdown(session.ErrShutdown)
	// Taking mu after the Manager drains fences the requests that found it not draining:
	// they have joined active by now, and later ones see it. The Manager has closed every
	// attachment, the dashboard streams' watches among them.
	s.mu.Lock()
	s.mu.Unlock()
	s.poll.Shutdown()
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

// sessionConfig passes the session settings of c through to session.Config, which
// applies their defaults.
func (c *Config) sessionConfig() session.Config {
	return session.Config{
		Heartbeat:       c.Heartbeat,
		PollHold:        c.PollHold,
		PollLinger:      c.PollLinger,
		SessionTTL:      c.SessionTTL,
		DedupeTTL:       c.DedupeTTL,
		StoreTimeout:    c.StoreTimeout,
		MaxMessageBytes: c.MaxMessageBytes,
		MaxChannels:     c.MaxChannels,
		QueueMessages:   c.QueueMessages,
		QueueBytes:      c.QueueBytes,
		UpstreamRate:    c.UpstreamRate,
		UpstreamBurst:   c.UpstreamBurst,
	}
}

// limitsWithLogger gives l the server's logger unless it has its own.
func limitsWithLogger(l transport.Limits, log *slog.Logger) transport.Limits {
	if l.Logger == nil {
		l.Logger = log
	}
	return l
}
