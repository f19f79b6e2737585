package session

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ferryrt/ferry/internal/keyrate"
)

// Store is the session state that every node of a cluster must share: which sessions are
// alive, and which upstream frames have been processed, with their outcomes. bridge's
// brokers implement it (in memory for one node, in Redis for many).
type Store interface {
	// CreateSession records a new live session for ttl.
	CreateSession(ctx context.Context, sid string, ttl time.Duration) error
	// TouchSession extends a live session by ttl and reports false if it has expired.
	TouchSession(ctx context.Context, sid string, ttl time.Duration) (alive bool, err error)
	// MarkUpstream records upstream seq, with result, in the dedupe window named key (see
	// DedupeKey), and reports whether seq is new there. For a duplicate it returns the
	// result recorded for seq (by its first mark or a later RecordUpstream), "" when there
	// is none or seq is older than the window. The window holds the latest sequence numbers
	// of key (how many is the store's setting, at least the client's count of frames in
	// flight) and lasts ttl after its latest mark. result is at most MaxUpstreamResult
	// bytes; the Manager gives its meaning.
	MarkUpstream(ctx context.Context, key string, seq uint64, result string, ttl time.Duration) (first bool, recorded string, err error)
	// RecordUpstream replaces the result of seq in key's window, if seq is marked there
	// and still in the window; otherwise it does nothing.
	RecordUpstream(ctx context.Context, key string, seq uint64, result string, ttl time.Duration) error
	// Announce tells every node that sid has a new attachment, so that older ones close.
	// A single-node store may do nothing: the Manager supersedes local attachments itself.
	Announce(ctx context.Context, sid, attachID string) error
}

// Action is something a session asks to do on a channel.
type Action int

// The actions a Handler authorizes.
const (
	ActSubscribe Action = iota + 1
	ActPublish
	ActSend
)

func (a Action) String() string {
	switch a {
	case ActSubscribe:
		return "subscribe"
	case ActPublish:
		return "publish"
	case ActSend:
		return "send"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Handler decides and does what clients ask beyond receiving: authorization and the
// upstream frames. bridge.Server implements it with the application's hooks.
type Handler interface {
	// Authorize returns nil to allow, or an error (an *Error for a specific code) to refuse.
	// channel is empty for ActSend.
	Authorize(ctx context.Context, c Claims, act Action, channel string) error
	// Send processes an upstream send frame; it runs at most once per dedupe key (see
	// DedupeKey: the client identity, or the session without one) and seq.
	Send(ctx context.Context, c Claims, f *ClientFrame) error
	// Publish publishes a pub frame's payload to its channel and returns the position.
	Publish(ctx context.Context, c Claims, f *ClientFrame) (Position, error)
}

// PresenceHook records presence; bridge implements it with a presence store. Calls must
// not block for long: they run on attach, heartbeat and subscribe paths.
type PresenceHook interface {
	Present(ctx context.Context, c Claims, channels []string)
	Absent(ctx context.Context, c Claims, channels []string)
}

// Identity is who a request authenticated as: what a token proves.
type Identity struct {
	User    string    // "" for anonymous
	Expires time.Time // zero: no expiry
	Grants  []string  // channel patterns the token allows beyond the default policy
}

// ErrTokenExpired closes the attachments of an identity whose token expired. The client
// negotiates again with a fresh token, resuming the session, or stops if it has none.
var ErrTokenExpired = &Error{Code: CodeTokenExpired, Reason: "token expired: negotiate again with a fresh token"}

// ErrRevoked closes the attachments of a revoked identity.
var ErrRevoked = &Error{Code: CodeUnauthorized, Reason: "identity revoked"}

// revoked checks a session's identity against its token expiry and the Revoked hook.
func (m *Manager) revoked(ctx context.Context, c Claims) *Error {
	if !c.Expires.IsZero() && time.Now().After(c.Expires) {
		return ErrTokenExpired
	}
	if m.cfg.Revoked != nil && m.cfg.Revoked(ctx, c) {
		return ErrRevoked
	}
	return nil
}

// Manager runs the sessions of one node: it issues and checks credentials, creates
// attachments and keeps at most one per session, and processes upstream frames exactly
// once. It holds no per-session state between attachments: the client's cursor and the
// shared Store carry everything, so any node can serve any request of any session.
type Manager struct {
	cfg  Config
	rate *keyrate.Table // upstream frames per session id, on this node; nil without a limit

	mu       sync.Mutex
	attached map[string]*Attachment   // by session id
	watches  map[*Attachment]struct{} // session-less attachments (Watch)
	closing  *Error
}

// NewManager returns a Manager. cfg.Store, cfg.Source and cfg.Handler are required.
func NewManager(cfg Config) *Manager {
	m := &Manager{cfg: cfg.WithDefaults(), attached: make(map[string]*Attachment), watches: make(map[*Attachment]struct{})}
	if m.cfg.UpstreamRate > 0 {
		m.rate = keyrate.New(m.cfg.UpstreamRate, m.cfg.UpstreamBurst)
	}
	return m
}

// ErrStoreUnavailable fails a request whose shared store (Redis) did not answer within
// Config.StoreTimeout, or failed: code 4000, answered 503, so the client retries, perhaps
// on another node. The error returned wraps it and the store's own error; match it with
// errors.Is.
var ErrStoreUnavailable = &Error{Code: CodeReconnect, Reason: "session store unavailable: retry"}

// storeError is a failure of the shared store: ErrStoreUnavailable for the client, the
// cause for the logs.
type storeError struct {
	op  string
	err error
}

func (e *storeError) Error() string   { return "session: " + e.op + ": " + e.err.Error() }
func (e *storeError) Unwrap() []error { return []error{ErrStoreUnavailable, e.err} }

// storeFailure wraps err, a failure of the store during op. A store's own close reason
// (a full node's ErrTooManySessions, an expired session) is kept.
func storeFailure(op string, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return fmt.Errorf("session: %s: %w", op, err)
	}
	return &storeError{op: op, err: err}
}

// storeCtx bounds the part of a request that waits on the store: see StoreTimeout. A
// ctx that ends within StoreTimeout already is that bound (the transports give the
// request's store calls one such context), and is returned as it is: a context derived
// from it would end no sooner, and costs an allocation and a place among ctx's children
// on every poll.
func (m *Manager) storeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if d, ok := ctx.Deadline(); ok && time.Until(d) <= m.cfg.StoreTimeout {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, m.cfg.StoreTimeout)
}

// Negotiated is the outcome of a negotiation.
type Negotiated struct {
	Credential string
	Claims     Claims
	Resumed    bool
}

// Negotiate resumes the session of prev if it is valid, alive and belongs to user, and
// otherwise creates a new session for user. cid is the client identity the request
// presents ("" for none; the caller has checked it with CheckClientID): the session's
// credential carries it, also when a resumed session had another, so that the upstream
// frames of the session are deduplicated with the client's (see DedupeKey).
func (m *Manager) Negotiate(ctx context.Context, prev string, id Identity, cid string) (Negotiated, error) {
	if err := m.draining(); err != nil {
		return Negotiated{}, err
	}
	ctx, cancel := m.storeCtx(ctx)
	defer cancel()
	user := id.User
	if prev != "" {
		// A resumed session takes the expiry and grants of the token presented now.
		if c, err := m.cfg.Signer.Verify(prev); err == nil && c.User == user {
			c.Expires, c.Grants, c.CID = id.Expires, id.Grants, cid
			alive, err := m.cfg.Store.TouchSession(ctx, c.SID, m.cfg.SessionTTL)
			if err != nil {
				return Negotiated{}, storeFailure("resume "+c.SID, err)
			}
			if alive {
				m.cfg.Observer.Negotiated(true)
				m.cfg.Logger.Info("session resumed", "sid", c.SID, "remote", remoteOf(ctx))
				return Negotiated{Credential: m.cfg.Signer.Issue(c), Claims: c, Resumed: true}, nil
			}
			m.cfg.Logger.Info("session expired", "sid", c.SID, "remote", remoteOf(ctx))
		}
	}
	c := Claims{SID: NewSessionID(), User: user, Issued: time.Now(), Expires: id.Expires, Grants: id.Grants, CID: cid}
	if err := m.cfg.Store.CreateSession(ctx, c.SID, m.cfg.SessionTTL); err != nil {
		return Negotiated{}, storeFailure("create", err)
	}
	m.cfg.Observer.Negotiated(false)
	m.cfg.Logger.Info("session created", "sid", c.SID, "user", c.User, "cid", c.CID, "remote", remoteOf(ctx))
	return Negotiated{Credential: m.cfg.Signer.Issue(c), Claims: c}, nil
}

// Draining reports whether Shutdown has been called: new attachments are refused, and a
// transport that keeps connections open between requests should close them.
func (m *Manager) Draining() bool { return m.draining() != nil }

func (m *Manager) draining() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closing != nil {
		return m.closing
	}
	return nil
}

// Verify checks a credential, that the session is alive, and (if user is not nil) that it
// belongs to *user. Every failure is ErrSession, whatever the reason.
func (m *Manager) Verify(ctx context.Context, cred string, user *string) (Claims, error) {
	c, err := m.cfg.Signer.Verify(cred)
	if err != nil || (user != nil && *user != c.User) {
		return Claims{}, ErrSession
	}
	ctx, cancel := m.storeCtx(ctx)
	defer cancel()
	if err := m.revoked(ctx, c); err != nil {
		return Claims{}, err
	}
	alive, err := m.cfg.Store.TouchSession(ctx, c.SID, m.cfg.SessionTTL)
	if err != nil {
		return Claims{}, storeFailure("touch "+c.SID, err)
	}
	if !alive {
		// Expiry has no event of its own (a Redis key just lapses): it shows when the
		// session's client comes back, here, or in an attachment's heartbeat.
		m.cfg.Logger.Info("session expired", "sid", c.SID, "remote", remoteOf(ctx))
		return Claims{}, ErrSession
	}
	return c, nil
}

// Shutdown refuses new attachments, watches and negotiations with e and closes every
// attachment, watches included, with it. It does not wait: the transports end their requests as their writers see the
// close.
func (m *Manager) Shutdown(e *Error) {
	m.mu.Lock()
	if m.closing == nil {
		m.closing = e
	}
	all := make([]*Attachment, 0, len(m.attached))
	var parked []*Attachment
	for sid, a := range m.attached {
		all = append(all, a)
		if m.unparkLocked(a) {
			parked = append(parked, a)
		}
		delete(m.attached, sid)
	}
	for a := range m.watches {
		all = append(all, a)
	}
	m.mu.Unlock()
	for _, a := range all {
		a.Close(e)
	}
	for _, a := range parked {
		m.Detach(a)
	}
}

// QueueDepth returns the frames waiting in the queues of all attachments on this node.
func (m *Manager) QueueDepth() int {
	m.mu.Lock()
	all := make([]*Attachment, 0, len(m.attached))
	for _, a := range m.attached {
		all = append(all, a)
	}
	m.mu.Unlock()
	n := 0
	for _, a := range all {
		n += a.Queued()
	}
	return n
}
