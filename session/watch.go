package session

import (
	"context"
	"log/slog"
	"time"
)

// WatchRequest describes a watch: channels read without a session, as a dashboard's
// EventSource reads them (GET /events, PROTOCOL.md §5).
type WatchRequest struct {
	Identity  Identity // who the request authenticated as; zero for anonymous
	Cursor    Cursor   // the channels, each resuming after its position (zero: from now)
	Transport string   // for logs: "events"
	// OnClose and OnWake become the attachment's Stream.OnClose and Stream.OnWake, as in
	// AttachRequest; they are set before any delivery.
	OnClose func(*Error)
	OnWake  func()
	Remote  string // the client's address, for logs
}

// Refusal is the error of a watch whose identity may not read one of its channels. Err is
// what the Handler answered (an *Error for a specific code, see AsError).
type Refusal struct {
	Channel string
	Err     error
}

// Error returns the Handler's reason, naming the channel.
func (r *Refusal) Error() string { return "subscribe to " + r.Channel + ": " + r.Err.Error() }

// Unwrap returns the Handler's error, so that AsError finds its close code.
func (r *Refusal) Unwrap() error { return r.Err }

// Watch returns a session-less attachment that reads req's channels: a session's
// attachment without the session. Nothing is stored for it, and it has no hello frame,
// presence or upstream; it lasts as long as its
// caller drives it, and is detached by Detach.
//
// Like a session's, it is refused with ErrTokenExpired or ErrRevoked when its identity
// has lapsed, and closed with them at a later heartbeat; its channels are authorized
// through the Handler (ActSubscribe), all of them before any is read, and a refused one
// refuses the watch with a *Refusal; Shutdown closes it, and a draining Manager refuses it.
// Its Stream sends ping frames every heartbeat from Next (a transport that drains with
// TryNext sends them with Ping).
func (m *Manager) Watch(ctx context.Context, req WatchRequest) (*Attachment, error) {
	if len(req.Cursor) > m.cfg.MaxChannels {
		return nil, Errorf(CodeBadRequest, "%d channels, at most %d allowed", len(req.Cursor), m.cfg.MaxChannels)
	}
	ctx, cancel := m.storeCtx(ctx)
	defer cancel()
	c := Claims{User: req.Identity.User, Expires: req.Identity.Expires, Grants: req.Identity.Grants}
	if err := m.revoked(ctx, c); err != nil {
		return nil, err
	}
	for _, e := range req.Cursor {
		if err := m.cfg.Handler.Authorize(ctx, c, ActSubscribe, e.Channel); err != nil {
			return nil, &Refusal{Channel: e.Channel, Err: err}
		}
	}
	a := &Attachment{
		Stream:    NewStream(m.cfg.Source, m.StreamConfig(m.cfg.Heartbeat)),
		Claims:    c,
		Transport: req.Transport,
		Started:   time.Now(),
		Remote:    req.Remote,
		watch:     true,
	}
	a.OnClose, a.OnWake = req.OnClose, req.OnWake
	a.OnHeartbeat = func() { m.heartbeat(a) }
	m.mu.Lock()
	if m.closing != nil {
		e := m.closing
		m.mu.Unlock()
		return nil, e
	}
	m.watches[a] = struct{}{}
	m.mu.Unlock()
	for _, e := range req.Cursor {
		// A channel without a position confirms where it starts with a sub frame, which
		// the stream turns into its first id (PROTOCOL.md §5).
		a.SubscribeContext(ctx, e.Channel, e.Position, false)
	}
	m.cfg.Logger.Debug("watching", "transport", req.Transport, "user", c.User, "remote", req.Remote, "channels", len(req.Cursor))
	return a, nil
}

// Lapsed returns why id may no longer be served, nil if it may: its token expired
// (ErrTokenExpired) or the Revoked hook says so (ErrRevoked). It is the check that an
// attachment's heartbeat makes, for requests without a session (history, presence).
func (m *Manager) Lapsed(ctx context.Context, id Identity) error {
	if e := m.revoked(ctx, Claims{User: id.User, Expires: id.Expires, Grants: id.Grants}); e != nil {
		return e
	}
	return nil
}

// unwatch forgets the watch a, which Detach then ends.
func (m *Manager) unwatch(a *Attachment) {
	m.mu.Lock()
	delete(m.watches, a)
	m.mu.Unlock()
	a.Done()
	e := a.Err()
	m.cfg.Logger.Log(context.Background(), slog.LevelDebug, "unwatched", "transport", a.Transport, "remote", a.Remote,
		"code", int(e.Code), "reason", e.Reason, "duration", time.Since(a.Started).Round(time.Millisecond))
}
