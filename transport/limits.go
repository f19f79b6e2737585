package transport

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ferryrt/ferry/internal/httpx"
	"github.com/ferryrt/ferry/internal/keyrate"
	"github.com/ferryrt/ferry/session"
)

// DefaultMaxConns is the default of Limits.MaxConns.
const DefaultMaxConns = 100_000

// Limits bound what one client address and the whole node may hold. Zero values get the
// defaults below.
//
// The per-address bounds are off by default: one address may be thousands of people
// (an office or a mobile carrier behind NAT, every client of a proxy whose
// X-Forwarded-For is not trusted), and after a restart they all come back within
// seconds. A per-address cap can't tell them from an abuser; the node-wide bounds
// (MaxConns, the broker's sessions, per-session queues) are what keep memory bounded.
// docs/OPERATIONS.md says how to size the per-address bounds where they are wanted.
type Limits struct {
	// MaxConns bounds open attachments (WebSocket connections, SSE streams, held polls)
	// on this node; beyond it requests get 503 (code 4000: try another node). Default
	// DefaultMaxConns; negative: no bound.
	MaxConns int
	// MaxConnsPerIP bounds open attachments per client address; beyond it requests get
	// 429 (code 4029). Zero or negative: no bound (the default).
	MaxConnsPerIP int
	// NegotiateRate and NegotiateBurst bound new sessions per client address: a token
	// bucket refilled at NegotiateRate per second holding NegotiateBurst. NegotiateRate
	// zero or negative: no bound (the default). NegotiateBurst defaults to ten seconds'
	// worth of NegotiateRate, at least 50.
	NegotiateRate  float64
	NegotiateBurst int
	// TrustForwardedFor takes the client address from the last X-Forwarded-For entry, as
	// set by a trusted reverse proxy in front of the server. Off by default: a client could
	// claim any address.
	TrustForwardedFor bool
	// Logger receives the Limiter's one warning: a per-address bound is on, requests carry
	// X-Forwarded-For or Forwarded, and TrustForwardedFor is off, so that every client of
	// the proxy shares the proxy's address and its bound. Nil: no warning.
	Logger *slog.Logger
}

func (l Limits) withDefaults() Limits {
	if l.MaxConns == 0 {
		l.MaxConns = DefaultMaxConns
	}
	if l.NegotiateRate > 0 && l.NegotiateBurst <= 0 {
		l.NegotiateBurst = max(50, int(10*l.NegotiateRate))
	}
	return l
}

// perAddress reports whether any per-address bound is on.
func (l Limits) perAddress() bool { return l.MaxConnsPerIP > 0 || l.NegotiateRate > 0 }

// Limiter counts attachments per address and node and rate-limits negotiations. One is
// shared by all handlers of a server (Config.Limiter).
type Limiter struct {
	cfg Limits

	negotiations *keyrate.Table // new sessions per address; nil without NegotiateRate

	mu    sync.Mutex
	total int
	perIP map[string]int

	proxyWarned atomic.Bool // the warning of Limits.Logger was given
}

// NewLimiter returns a Limiter enforcing cfg.
func NewLimiter(cfg Limits) *Limiter {
	cfg = cfg.withDefaults()
	if !cfg.perAddress() {
		cfg.Logger = nil // without a per-address bound, a proxy's address hurts nothing
	}
	l := &Limiter{cfg: cfg, perIP: map[string]int{}}
	if cfg.NegotiateRate > 0 {
		l.negotiations = keyrate.New(cfg.NegotiateRate, cfg.NegotiateBurst)
	}
	return l
}

// clientIP returns the address a request comes from.
func (l *Limiter) clientIP(r *http.Request) string {
	if l.cfg.TrustForwardedFor {
		if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
			parts := strings.Split(xff, ",")
			return strings.TrimSpace(parts[len(parts)-1])
		}
	} else if l.cfg.Logger != nil && !l.proxyWarned.Load() {
		l.warnProxy(r)
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// warnProxy logs, once, that the node seems to sit behind a proxy whose clients all count
// as the proxy's address against a per-address bound.
func (l *Limiter) warnProxy(r *http.Request) {
	header := ""
	switch {
	case r.Header.Get("X-Forwarded-For") != "":
		header = "X-Forwarded-For"
	case r.Header.Get("Forwarded") != "":
		header = "Forwarded"
	default:
		return
	}
	if l.proxyWarned.Swap(true) {
		return
	}
	l.cfg.Logger.Warn("requests carry "+header+" but --trust-forwarded-for is off: every client behind that proxy counts as the proxy's address, and the per-address limits (--max-conns-per-ip, --negotiate-rate) apply to all of them together; set --trust-forwarded-for if the proxy sets the header, or turn the per-address limits off",
		"proxy", r.RemoteAddr, "header", header, "max_conns_per_ip", l.cfg.MaxConnsPerIP, "negotiate_rate", l.cfg.NegotiateRate)
}

// limitError is a refusal of the Limiter. Its close code tells the client what to do
// (4000: another node, 4029: back off), which is not what an operator asks: a connection
// cap and a rate limit both answer 4029, so the metric label travels with the error.
type limitError struct {
	*httpx.StatusError
	reason string // ferry_rejected_total label: "limit" (a cap) or "rate"
}

func (e *limitError) Unwrap() error { return e.StatusError }

var (
	errNodeFull = &limitError{httpx.WithStatus(http.StatusServiceUnavailable, &session.Error{Code: session.CodeReconnect, Reason: "server full: connect to another node"}), "limit"}
	errIPFull   = &limitError{httpx.WithStatus(http.StatusTooManyRequests, &session.Error{Code: session.CodeRateLimited, Reason: "too many connections from this address"}), "limit"}
	errNegRate  = &limitError{httpx.WithStatus(http.StatusTooManyRequests, &session.Error{Code: session.CodeRateLimited, Reason: "too many new sessions from this address; retry later"}), "rate"}
)

// rejectReason is the ferry_rejected_total label of a refusal: auth, session, origin,
// forbidden, limit, rate, draining or bad_request.
func rejectReason(err error) string {
	if le := (*limitError)(nil); errors.As(err, &le) {
		return le.reason
	}
	switch session.AsError(err).Code {
	case session.CodeReconnect, session.CodeTooBig:
		// A request refused with "try another node" found this node full (the session
		// store: --max-sessions); one too big exceeded a size cap.
		return "limit"
	case session.CodeSessionExpired:
		return "session"
	case session.CodeUnauthorized, session.CodeTokenExpired:
		return "auth"
	case session.CodeForbidden, session.CodePolicy:
		return "forbidden"
	case session.CodeRateLimited:
		return "rate"
	case session.CodeShutdown:
		return "draining"
	}
	return "bad_request"
}

// acquire takes one attachment slot for r's address, or returns why not. The caller must
// call the returned release once.
func (l *Limiter) acquire(r *http.Request) (release func(), err error) {
	ip := l.clientIP(r)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cfg.MaxConns > 0 && l.total >= l.cfg.MaxConns {
		return nil, errNodeFull
	}
	if l.cfg.MaxConnsPerIP > 0 && l.perIP[ip] >= l.cfg.MaxConnsPerIP {
		return nil, errIPFull
	}
	l.total++
	l.perIP[ip]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.total--
			if l.perIP[ip]--; l.perIP[ip] <= 0 {
				delete(l.perIP, ip)
			}
		})
	}, nil
}

// allowNegotiate takes a token from r's address's negotiation bucket.
func (l *Limiter) allowNegotiate(r *http.Request) error {
	if l.negotiations != nil && !l.negotiations.Allow(l.clientIP(r)) {
		return errNegRate
	}
	return nil
}
