package session

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
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

// Config configures a Manager. Durations and sizes that are zero get the defaults below.
type Config struct {
	Signer  *Signer
	Store   Store
	Source  Source
	Handler Handler
	Logger  *slog.Logger
	// Observer is told what sessions do; default NopObserver.
	Observer Observer
	// Presence, if set, is told which channels each session is present on: on every
	// attachment, heartbeat and subscribe, on a long-poll that continues its parked
	// attachment (Resume) once a heartbeat interval has passed since the last time, and on
	// unsubscribe. Absence otherwise comes from the presence store's TTL, since a session
	// that leaves here may attach elsewhere. A polling session is thus refreshed at most
	// Heartbeat + PollHold (plus a round trip) apart: the store's TTL must be longer.
	Presence PresenceHook
	// Revoked, if set, is asked on every request and every heartbeat of an attachment
	// whether the session's identity was revoked; a revoked one is closed with 4101.
	Revoked func(ctx context.Context, c Claims) bool

	Heartbeat time.Duration // default 15 s
	PollHold  time.Duration // default 25 s
	// PollLinger is how long a long-poll attachment stays subscribed after answering, for
	// the session's next poll to continue from (see Park); default 10 s, negative: never.
	PollLinger time.Duration
	SessionTTL time.Duration // default 60 s
	// DedupeTTL is how long the dedupe window of a client identity (or of a session
	// without one) outlives its latest upstream frame: a frame resent within it is
	// recognised, also by a new session of the same client identity after 4005. Default
	// twice SessionTTL, and never less than SessionTTL. A client must not resend a frame
	// longer than DedupeTTL after it first sent it (the JS client's sendTimeout, 30 s,
	// ends its attempts well before).
	DedupeTTL time.Duration
	// StoreTimeout bounds what one request waits for the shared Store and Source (Redis):
	// the session check of a request, an attachment's announcement and subscriptions, a
	// negotiation, the dedupe of upstream frames, each history read. A request that runs
	// out of it fails with ErrStoreUnavailable (503, code 4000: the client retries), so a
	// paused Redis costs each request at most this long instead of holding it and what it
	// runs on. Default 5 s.
	StoreTimeout    time.Duration
	MaxMessageBytes int // default 64 KiB
	MaxChannels     int // default 128
	QueueMessages   int // default 1024
	QueueBytes      int // default 4 MiB
	BatchMessages   int // default 1000
	BatchBytes      int // default 1 MiB
	// UpstreamRate and UpstreamBurst bound the send and pub frames of one session: a token
	// bucket refilled at UpstreamRate per second. Beyond it frames are refused with 4029 and
	// not marked processed, so the client resends them after a backoff. Default 100/s,
	// burst 200; a negative rate turns the limit off.
	UpstreamRate  float64
	UpstreamBurst int
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

// Defaults, PROTOCOL.md §6.
const (
	DefaultHeartbeat       = 15 * time.Second
	DefaultPollHold        = 25 * time.Second
	DefaultPollLinger      = 10 * time.Second
	DefaultSessionTTL      = 60 * time.Second
	DefaultStoreTimeout    = 5 * time.Second
	DefaultMaxMessageBytes = 64 << 10
	DefaultMaxChannels     = 128
	DefaultQueueMessages   = 1024
	DefaultQueueBytes      = 4 << 20
	DefaultBatchMessages   = 1000
	DefaultBatchBytes      = 1 << 20
)

func orDefault[T comparable](v, d T) T {
	var zero T
	if v == zero {
		return d
	}
	return v
}

// WithDefaults returns c with every zero setting replaced by its default.
func (c Config) WithDefaults() Config {
	c.Heartbeat = orDefault(c.Heartbeat, DefaultHeartbeat)
	c.PollHold = orDefault(c.PollHold, DefaultPollHold)
	c.PollLinger = orDefault(c.PollLinger, DefaultPollLinger)
	c.SessionTTL = orDefault(c.SessionTTL, DefaultSessionTTL)
	c.DedupeTTL = max(orDefault(c.DedupeTTL, 2*c.SessionTTL), c.SessionTTL)
	c.StoreTimeout = orDefault(c.StoreTimeout, DefaultStoreTimeout)
	c.MaxMessageBytes = orDefault(c.MaxMessageBytes, DefaultMaxMessageBytes)
	c.MaxChannels = orDefault(c.MaxChannels, DefaultMaxChannels)
	c.QueueMessages = max(orDefault(c.QueueMessages, DefaultQueueMessages), 8)
	c.QueueBytes = max(orDefault(c.QueueBytes, DefaultQueueBytes), 1024)
	c.BatchMessages = orDefault(c.BatchMessages, DefaultBatchMessages)
	c.BatchBytes = orDefault(c.BatchBytes, DefaultBatchBytes)
	c.UpstreamRate = orDefault(c.UpstreamRate, 100)
	c.UpstreamBurst = orDefault(c.UpstreamBurst, 200)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Observer == nil {
		c.Observer = NopObserver{}
	}
	if c.Signer == nil {
		c.Signer = NewSigner(nil)
	}
	return c
}

// Manager runs the sessions of one node: it issues and checks credentials, creates
// attachments and keeps at most one per session, and processes upstream frames exactly
// once. It holds no per-session state between attachments: the client's cursor and the
// shared Store carry everything, so any node can serve any request of any session.
type Manager struct {
	cfg  Config
	rate *upstreamLimiter // nil without a limit

	mu       sync.Mutex
	attached map[string]*Attachment // by session id
	closing  *Error
}

// NewManager returns a Manager. cfg.Store, cfg.Source and cfg.Handler are required.
func NewManager(cfg Config) *Manager {
	m := &Manager{cfg: cfg.WithDefaults(), attached: make(map[string]*Attachment)}
	if m.cfg.UpstreamRate > 0 {
		m.rate = newUpstreamLimiter(m.cfg.UpstreamRate, m.cfg.UpstreamBurst)
	}
	return m
}

// ConnConfig returns the bounds of an attachment, with pings every heartbeat (0: none).
func (m *Manager) ConnConfig(heartbeat time.Duration) ConnConfig {
	return ConnConfig{
		QueueMessages: m.cfg.QueueMessages,
		QueueBytes:    m.cfg.QueueBytes,
		BatchMessages: m.cfg.BatchMessages,
		BatchBytes:    m.cfg.BatchBytes,
		PageSize:      m.cfg.QueueMessages / 2,
		Heartbeat:     heartbeat,
		StoreTimeout:  m.cfg.StoreTimeout,
	}
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

// storeCtx bounds the part of a request that waits on the store: see StoreTimeout.
func (m *Manager) storeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, m.cfg.StoreTimeout)
}

// Config returns the manager's configuration with defaults applied.
func (m *Manager) Config() Config { return m.cfg }

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

// AttachRequest describes a new attachment.
type AttachRequest struct {
	Claims    Claims // from Verify
	Transport string // "websocket", "sse" or "longpoll"
	Cursor    Cursor
	// Hello asks for the hello frame and a sub frame for every channel. Without it, sub
	// frames come only for channels that have no position (long-polling after the first poll).
	Hello bool
	// Heartbeat sends ping frames while attached (streaming transports).
	Heartbeat bool
	// OnClose becomes the attachment's Conn.OnClose; it is set before any delivery.
	OnClose func(*Error)
	// OnWake becomes the attachment's Conn.OnWake, likewise.
	OnWake func()
	// Seq is the client's attachment sequence (the att parameter): an attachment never
	// supersedes one with a higher Seq. 0 when the client sends none.
	Seq uint64
	// From and Reason are what the client says about the transport it leaves, for
	// metrics and logs; Remote is the client's address, for logs.
	From, Reason, Remote string
}

// Attachment is the current downstream of a session on this node.
type Attachment struct {
	*Conn
	Claims    Claims
	ID        string
	Transport string
	Started   time.Time
	Remote    string
	Seq       uint64

	// Between two polls of a long-poll attachment (guarded by the Manager's mu): expect is
	// the cursor the client holds after the last answer; linger detaches it if no poll
	// continues in time. gen tells a linger timer from an earlier one.
	parked bool
	expect Cursor
	gen    uint64
	linger *time.Timer
	// presentAt is when the session's presence was last refreshed for a long-poll
	// attachment (guarded by the Manager's mu): Resume refreshes it once a heartbeat
	// interval has passed, not on every poll.
	presentAt time.Time
}

// newAttachID returns an id that sorts by the client's attachment sequence, then by
// creation time across nodes (to the extent their clocks agree), so that of two racing
// attachments every node keeps the same one: the client's newest.
func newAttachID(seq uint64, now time.Time) string {
	var r [4]byte
	rand.Read(r[:])
	return fmt.Sprintf("%016x-%016x-%s", seq, now.UnixNano(), hex.EncodeToString(r[:]))
}

// Attach creates the attachment for req, superseding the session's previous one on any
// node, and subscribes the cursor's channels after authorizing each. The caller drives
// it with Next and must call Detach when done.
func (m *Manager) Attach(ctx context.Context, req AttachRequest) (*Attachment, error) {
	if len(req.Cursor) > m.cfg.MaxChannels {
		return nil, Errorf(CodeBadRequest, "%d channels, at most %d allowed", len(req.Cursor), m.cfg.MaxChannels)
	}
	ctx, cancel := m.storeCtx(ctx)
	defer cancel()
	now := time.Now()
	a := &Attachment{
		Conn:      NewConn(m.cfg.Source, m.ConnConfig(0)),
		Claims:    req.Claims,
		ID:        newAttachID(req.Seq, now),
		Seq:       req.Seq,
		Transport: req.Transport,
		Started:   now,
		Remote:    req.Remote,
		presentAt: now, // presence is refreshed below
	}
	a.OnClose = req.OnClose
	a.OnWake = req.OnWake
	a.OnReset = m.cfg.Observer.Reset
	if req.Heartbeat {
		a.Conn.cfg.Heartbeat = m.cfg.Heartbeat
		sid := req.Claims.SID
		a.OnHeartbeat = func() {
			// Keep the session alive in the shared store while it is attached here.
			ctx, cancel := context.WithTimeout(context.Background(), min(m.cfg.Heartbeat, m.cfg.StoreTimeout))
			defer cancel()
			if alive, err := m.cfg.Store.TouchSession(ctx, sid, m.cfg.SessionTTL); err == nil && !alive {
				m.cfg.Logger.Info("session expired", "sid", sid, "transport", a.Transport, "remote", a.Remote)
				a.Close(ErrSession)
			}
			// An identity that expired or was revoked loses its attachment within a heartbeat.
			if err := m.revoked(ctx, a.Claims); err != nil {
				a.Close(err)
				return
			}
			m.present(ctx, a)
		}
	}
	if req.Hello {
		a.Enqueue((&ServerFrame{T: FrameHello, SID: req.Claims.SID, V: 1, Tr: req.Transport,
			TS: now.UnixMilli(), HB: m.cfg.Heartbeat.Milliseconds()}).Encode())
	}

	m.mu.Lock()
	if m.closing != nil {
		e := m.closing
		m.mu.Unlock()
		return nil, e
	}
	prev := m.attached[req.Claims.SID]
	if prev != nil && prev.Seq > req.Seq {
		// A request the client made before its current attachment, arriving late (a poll
		// held up on the way): it must not take over from what the client uses now.
		m.mu.Unlock()
		return nil, ErrSuperseded
	}
	m.attached[req.Claims.SID] = a
	prevParked := prev != nil && m.unparkLocked(prev)
	m.mu.Unlock()
	if prev != nil {
		prev.Close(ErrSuperseded)
		if prevParked {
			m.Detach(prev)
		}
	}
	if err := m.cfg.Store.Announce(ctx, req.Claims.SID, a.ID); err != nil {
		m.Detach(a)
		return nil, storeFailure("announce attachment", err)
	}
	resumed := 0
	var present []string
	for _, e := range req.Cursor {
		if !e.Position.IsZero() {
			resumed++
		}
		if m.subscribe(ctx, a, e.Channel, e.Position, req.Hello) {
			present = append(present, e.Channel)
		}
	}
	if m.cfg.Presence != nil && len(present) > 0 {
		m.cfg.Presence.Present(ctx, req.Claims, present)
	}
	m.cfg.Observer.Attached(req.Transport, req.From, req.Reason, resumed)
	// Long-polls attach once per request: their lifecycle is logged at debug level only.
	level := slog.LevelInfo
	if req.Transport == "longpoll" && !req.Hello {
		level = slog.LevelDebug
	}
	m.cfg.Logger.Log(ctx, level, "attached", "sid", req.Claims.SID, "transport", req.Transport,
		"remote", req.Remote, "channels", len(req.Cursor), "from", req.From, "reason", req.Reason)
	return a, nil
}

func (m *Manager) subscribe(ctx context.Context, a *Attachment, ch string, pos Position, confirm bool) bool {
	if err := m.cfg.Handler.Authorize(ctx, a.Claims, ActSubscribe, ch); err != nil {
		e := refusal(err, "subscribe to "+ch)
		a.Enqueue((&ServerFrame{T: FrameUnsub, Ch: ch, Code: e.Code, Reason: e.Reason}).Encode())
		return false
	}
	a.SubscribeContext(ctx, ch, pos, confirm)
	return true
}

// refusal turns an authorization error into the *Error the client sees.
func refusal(err error, what string) *Error {
	if e, ok := err.(*Error); ok {
		return e
	}
	return Errorf(CodeForbidden, "%s: forbidden", what)
}

// Detach ends a's turn: it is closed and, if still current, forgotten.
func (m *Manager) Detach(a *Attachment) {
	m.mu.Lock()
	if m.attached[a.Claims.SID] == a {
		delete(m.attached, a.Claims.SID)
	}
	m.mu.Unlock()
	a.Done()
	e := a.Err()
	m.cfg.Observer.Detached(a.Transport, e.Code)
	// A long-poll that ends normally is one poll of many: at debug level, like its attach.
	level := slog.LevelInfo
	if a.Transport == "longpoll" && e.Code == CodeNormal {
		level = slog.LevelDebug
	}
	m.cfg.Logger.Log(context.Background(), level, "detached", "sid", a.Claims.SID, "transport", a.Transport, "remote", a.Remote,
		"code", int(e.Code), "reason", e.Reason, "duration", time.Since(a.Started).Round(time.Millisecond))
}

// Supersede closes the local attachment of sid if it is older than attachID. Brokers call
// it for announcements from other nodes.
func (m *Manager) Supersede(sid, attachID string) {
	m.mu.Lock()
	a := m.attached[sid]
	if a == nil || strings.Compare(a.ID, attachID) >= 0 {
		m.mu.Unlock()
		return
	}
	delete(m.attached, sid)
	parked := m.unparkLocked(a)
	m.mu.Unlock()
	a.Close(ErrSuperseded)
	if parked {
		m.Detach(a)
	}
}

// Attached returns the number of attachments on this node that have a connection: every
// WebSocket and SSE stream and every long-poll being held, not those parked between polls.
func (m *Manager) Attached() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, a := range m.attached {
		if !a.parked {
			n++
		}
	}
	return n
}

// Park keeps a long-poll attachment after its poll has been answered, so that the
// session's next poll can continue from it (Resume) instead of subscribing again and
// reading history: expect is the cursor the client holds once it has read the answer.
// Meanwhile the attachment stays subscribed and queues what arrives, within its bounds.
// A poll that doesn't continue it in PollLinger, a newer attachment, or a close detaches
// it. Park takes over the caller's duty to Detach a.
//
// This is a cache, not state the protocol relies on: a poll whose cursor differs (its
// last answer was lost, it subscribed or unsubscribed, it went to another node) attaches
// afresh from its cursor, which is always correct.
func (m *Manager) Park(a *Attachment, expect Cursor) {
	if m.cfg.PollLinger < 0 || a.Err() != nil {
		m.Detach(a)
		return
	}
	m.mu.Lock()
	if m.attached[a.Claims.SID] != a || m.closing != nil {
		m.mu.Unlock()
		m.Detach(a)
		return
	}
	a.parked, a.expect = true, expect
	a.gen++
	gen := a.gen
	a.linger = time.AfterFunc(m.cfg.PollLinger, func() {
		m.mu.Lock()
		expired := a.parked && a.gen == gen
		if expired {
			a.parked, a.expect = false, nil
		}
		m.mu.Unlock()
		if expired {
			m.Detach(a)
		}
	})
	m.mu.Unlock()
}

// Resume returns the session's parked long-poll attachment if the poll (attachment
// sequence seq, cursor cur, in the same order) continues exactly where its last answer
// left the client, and nil otherwise. A resumed attachment is the caller's to Park or
// Detach again. claims are the poll's, which may carry a renewed token's expiry.
//
// A long-poll attachment has no heartbeat, and a continued poll does not attach, so
// Resume is what keeps a polling session present: it refreshes presence when a heartbeat
// interval has passed since the last refresh. Polls can come much more often than that
// (one per message burst), and each refresh costs the presence store a round trip.
func (m *Manager) Resume(claims Claims, seq uint64, cur Cursor) *Attachment {
	m.mu.Lock()
	a := m.attached[claims.SID]
	if a == nil || !a.parked || a.Seq != seq || !a.expect.Same(cur) {
		m.mu.Unlock()
		return nil
	}
	m.unparkLocked(a)
	a.Claims = claims
	now := time.Now()
	// Decided under mu, so that of two racing polls at most one refreshes.
	refresh := m.cfg.Presence != nil && now.Sub(a.presentAt) >= m.cfg.Heartbeat
	if refresh {
		a.presentAt = now
	}
	m.mu.Unlock()
	if a.Err() != nil { // closed while parked (slow consumer): the poll attaches afresh
		m.Detach(a)
		return nil
	}
	if refresh {
		// Not bound to the poll's request: a client that abandons this poll polls again,
		// and that poll must not find the refresh marked done but never made.
		ctx, cancel := context.WithTimeout(context.Background(), min(m.cfg.Heartbeat, m.cfg.StoreTimeout))
		m.present(ctx, a)
		cancel()
	}
	return a
}

// present refreshes the session's presence on every channel a is subscribed to.
func (m *Manager) present(ctx context.Context, a *Attachment) {
	if m.cfg.Presence == nil {
		return
	}
	chans := a.Channels()
	if len(chans) == 0 {
		return
	}
	names := make([]string, len(chans))
	for i, e := range chans {
		names[i] = e.Channel
	}
	m.cfg.Presence.Present(ctx, a.Claims, names)
}

// unparkLocked takes a out of the parked state and reports whether it was parked.
func (m *Manager) unparkLocked(a *Attachment) bool {
	if !a.parked {
		return false
	}
	a.parked, a.expect = false, nil
	a.linger.Stop()
	return true
}

// HandleFrame processes a frame that arrived on a's own connection (WebSocket): it
// subscribes, unsubscribes, or processes upstream and queues the ack.
func (m *Manager) HandleFrame(ctx context.Context, a *Attachment, f *ClientFrame) {
	ctx, cancel := m.storeCtx(ctx)
	defer cancel()
	switch f.T {
	case FrameSub:
		if a.Len() >= m.cfg.MaxChannels {
			a.Enqueue((&ServerFrame{T: FrameUnsub, Ch: f.Ch, Code: CodeBadRequest,
				Reason: fmt.Sprintf("at most %d channels per session", m.cfg.MaxChannels)}).Encode())
			return
		}
		if m.subscribe(ctx, a, f.Ch, f.Position(), true) && m.cfg.Presence != nil {
			m.cfg.Presence.Present(ctx, a.Claims, []string{f.Ch})
		}
	case FrameUnsub:
		a.Unsubscribe(f.Ch)
		if m.cfg.Presence != nil {
			m.cfg.Presence.Absent(ctx, a.Claims, []string{f.Ch})
		}
	case FrameSend, FramePub:
		ack := m.upstream(ctx, a.Claims, f)
		if ack.Err == ErrSession {
			a.Close(ErrSession)
			return
		}
		a.Enqueue(ack.Frame())
	}
}

// Upstream processes send and pub frames that arrived by POST and returns one ack each,
// in order. An error is returned only when the shared store fails; frames acked before it
// stay processed, and the client resends the rest.
func (m *Manager) Upstream(ctx context.Context, c Claims, frames []ClientFrame) ([]Ack, error) {
	ctx, cancel := m.storeCtx(ctx)
	defer cancel()
	acks := make([]Ack, 0, len(frames))
	for i := range frames {
		f := &frames[i]
		if f.T != FrameSend && f.T != FramePub {
			acks = append(acks, Ack{Seq: f.Seq, Err: Errorf(CodeBadRequest, "%s frames are not accepted by POST", f.T)})
			continue
		}
		ack := m.upstream(ctx, c, f)
		if ack.Err == ErrSession {
			return acks, ErrSession
		}
		if ack.Err == errStore {
			// upstream has logged the store's error.
			return acks, storeFailure("dedupe for "+c.SID, errors.New("store failed"))
		}
		acks = append(acks, ack)
	}
	return acks, nil
}

var errRateLimited = &Error{Code: CodeRateLimited, Reason: "rate limited: resend after a backoff"}

// errInProgress answers a duplicate whose first attempt has no outcome yet. The frame's
// client resends it after a backoff, as after a rate limit, and then gets the outcome.
var errInProgress = &Error{Code: CodeRateLimited, Reason: "the first attempt of this frame is still being processed: resend after a backoff"}

var errStore = &Error{Code: CodeInternal, Reason: "session store unavailable"}

// upstream processes one send or pub frame at most once per DedupeKey and seq, and
// answers a duplicate as its first attempt was answered (see outcome).
func (m *Manager) upstream(ctx context.Context, c Claims, f *ClientFrame) Ack {
	act, ch := ActSend, ""
	if f.T == FramePub {
		act, ch = ActPublish, f.Ch
	}
	// Authorize before deduplicating, so that a refused frame stays refused when resent.
	if err := m.cfg.Handler.Authorize(ctx, c, act, ch); err != nil {
		m.cfg.Observer.Upstream("refused")
		return Ack{Seq: f.Seq, Err: refusal(err, act.String()+" "+ch)}
	}
	if m.rate != nil && !m.rate.allow(c.SID) {
		m.cfg.Observer.Rejected("rate")
		return Ack{Seq: f.Seq, Err: errRateLimited}
	}
	key := DedupeKey(c)
	// A pub's outcome is its position, known only once it is published: until then the
	// mark says "pending". A send's is "ok" unless the handler fails.
	initial := ""
	if f.T == FramePub {
		initial = outcomePending
	}
	first, recorded, err := m.cfg.Store.MarkUpstream(ctx, key, f.Seq, initial, m.cfg.DedupeTTL)
	if errors.Is(err, ErrSession) {
		return Ack{Seq: f.Seq, Err: ErrSession}
	}
	if err != nil {
		m.cfg.Logger.Warn("dedupe store failed", "sid", c.SID, "key", key, "err", err)
		return Ack{Seq: f.Seq, Err: errStore}
	}
	if !first {
		ack := replay(f.Seq, recorded)
		if ack.Err == errInProgress {
			m.cfg.Observer.Upstream("in_progress")
		} else {
			m.cfg.Observer.Upstream("duplicate")
		}
		return ack
	}
	if f.T == FramePub {
		pos, err := m.cfg.Handler.Publish(ctx, c, f)
		if err != nil {
			// The frame counts as processed: a failed publish is reported, not retried, so
			// that a publish that did land but timed out can't land twice.
			e := AsError(err)
			m.record(c, key, f.Seq, errorOutcome(e))
			return Ack{Seq: f.Seq, Err: e}
		}
		m.record(c, key, f.Seq, positionOutcome(pos))
		m.cfg.Observer.Upstream("ok")
		return Ack{Seq: f.Seq, Pos: pos}
	}
	if err := m.cfg.Handler.Send(ctx, c, f); err != nil {
		e := AsError(err)
		m.record(c, key, f.Seq, errorOutcome(e))
		m.cfg.Observer.Upstream("refused")
		return Ack{Seq: f.Seq, Err: e}
	}
	m.cfg.Observer.Upstream("ok")
	return Ack{Seq: f.Seq}
}

// record stores the outcome of a processed frame for its duplicates. It has its own
// StoreTimeout: the frame's may have gone into processing it. A failure leaves a pub's
// mark pending: its resends are answered "in progress" until the client gives up on it,
// which is the truth (the client can't learn its position), and is logged.
func (m *Manager) record(c Claims, key string, seq uint64, outcome string) {
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.StoreTimeout)
	defer cancel()
	if err := m.cfg.Store.RecordUpstream(ctx, key, seq, outcome, m.cfg.DedupeTTL); err != nil {
		m.cfg.Logger.Warn("recording an upstream outcome failed", "sid", c.SID, "key", key, "seq", seq, "err", err)
	}
}

// Shutdown refuses new attachments and negotiations with e and closes every attachment
// with it. It does not wait: the transports end their requests as their writers see the
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
