package session

import (
	"context"
	"log/slog"
	"time"
)

// Config configures a Manager. Durations and sizes that are zero get the Default*
// constants below. This package owns these settings and their defaults: bridge.Config
// passes them through unchanged, and cmd/ferry's flags default to the same constants.
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

	Heartbeat time.Duration // default DefaultHeartbeat, 15 s
	PollHold  time.Duration // default DefaultPollHold, 25 s
	// PollLinger is how long a long-poll attachment stays subscribed after answering, for
	// the session's next poll to continue from (see Park); default DefaultPollLinger, 10 s;
	// negative: never.
	PollLinger time.Duration
	SessionTTL time.Duration // default DefaultSessionTTL, 60 s
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
	// runs on. Default DefaultStoreTimeout, 5 s.
	StoreTimeout    time.Duration
	MaxMessageBytes int // payload bytes; default DefaultMaxMessageBytes, 64 KiB
	MaxChannels     int // per session; default DefaultMaxChannels, 128
	QueueMessages   int // per attachment; default DefaultQueueMessages, 1024 (at least 8)
	QueueBytes      int // per attachment; default DefaultQueueBytes, 4 MiB (at least 1 KiB)
	BatchMessages   int // per write; default DefaultBatchMessages, 1000
	BatchBytes      int // per write; default DefaultBatchBytes, 1 MiB
	// UpstreamRate and UpstreamBurst bound the send and pub frames of one session: a token
	// bucket refilled at UpstreamRate per second. Beyond it frames are refused with 4029 and
	// not marked processed, so the client resends them after a backoff. Default
	// DefaultUpstreamRate and DefaultUpstreamBurst; a negative rate turns the limit off.
	UpstreamRate  float64
	UpstreamBurst int
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
	DefaultUpstreamRate    = 100 // frames per second and session
	DefaultUpstreamBurst   = 200
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
	c.UpstreamRate = orDefault(c.UpstreamRate, DefaultUpstreamRate)
	c.UpstreamBurst = orDefault(c.UpstreamBurst, DefaultUpstreamBurst)
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

// StreamConfig returns the bounds of an attachment, with pings every heartbeat (0: none).
func (m *Manager) StreamConfig(heartbeat time.Duration) StreamConfig {
	return StreamConfig{
		QueueMessages: m.cfg.QueueMessages,
		QueueBytes:    m.cfg.QueueBytes,
		BatchMessages: m.cfg.BatchMessages,
		BatchBytes:    m.cfg.BatchBytes,
		PageSize:      m.cfg.QueueMessages / 2,
		Heartbeat:     heartbeat,
		StoreTimeout:  m.cfg.StoreTimeout,
	}
}

// Config returns the manager's configuration with defaults applied.
func (m *Manager) Config() Config { return m.cfg }

// Params are the settings of a Manager that its transports apply or announce to clients
// (PROTOCOL.md §2 and §6), with defaults applied.
type Params struct {
	Heartbeat       time.Duration
	PollHold        time.Duration
	SessionTTL      time.Duration
	StoreTimeout    time.Duration
	MaxMessageBytes int
	MaxChannels     int
}

// Params returns the settings the transports need, so that they read them without the
// rest of the Config (its Store, Source and Handler).
func (m *Manager) Params() Params {
	return Params{
		Heartbeat:       m.cfg.Heartbeat,
		PollHold:        m.cfg.PollHold,
		SessionTTL:      m.cfg.SessionTTL,
		StoreTimeout:    m.cfg.StoreTimeout,
		MaxMessageBytes: m.cfg.MaxMessageBytes,
		MaxChannels:     m.cfg.MaxChannels,
	}
}
