package session

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
)

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
	// OnClose becomes the attachment's Stream.OnClose; it is set before any delivery.
	OnClose func(*Error)
	// OnWake becomes the attachment's Stream.OnWake, likewise.
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
	*Stream
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
	// watch marks a session-less attachment (Watch): it has no session to keep alive,
	// and the Manager keeps it apart from the sessions' attachments.
	watch bool
}

// newAttachID returns an id that sorts by the client's attachment sequence, then by
// creation time across nodes (to the extent their clocks agree), so that of two racing
// attachments every node keeps the same one: the client's newest.
// The random UUID at the end only tells apart two attachments made at the same instant.
func newAttachID(seq uint64, now time.Time) string {
	return fmt.Sprintf("%016x-%016x-%s", seq, now.UnixNano(), uuid.NewString())
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
	a := m.newAttachment(req, time.Now())
	if err := m.install(a); err != nil {
		return nil, err
	}
	if err := m.cfg.Store.Announce(ctx, req.Claims.SID, a.ID); err != nil {
		m.Detach(a)
		return nil, storeFailure("announce attachment", err)
	}
	resumed := m.subscribeCursor(ctx, a, req)
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

// newAttachment builds the attachment of req, with its hello frame queued and, for a
// streaming transport, its heartbeat hook.
func (m *Manager) newAttachment(req AttachRequest, now time.Time) *Attachment {
	a := &Attachment{
		Stream:    NewStream(m.cfg.Source, m.StreamConfig(0)),
		Claims:    req.Claims,
		ID:        newAttachID(req.Seq, now),
		Seq:       req.Seq,
		Transport: req.Transport,
		Started:   now,
		Remote:    req.Remote,
		presentAt: now, // presence is refreshed by subscribeCursor
	}
	a.OnClose = req.OnClose
	a.OnWake = req.OnWake
	a.OnReset = m.cfg.Observer.Reset
	if req.Heartbeat {
		a.Stream.cfg.Heartbeat = m.cfg.Heartbeat
		a.OnHeartbeat = func() { m.heartbeat(a) }
	}
	if req.Hello {
		a.Enqueue((&ServerFrame{T: FrameHello, SID: req.Claims.SID, V: 1, Tr: req.Transport,
			TS: now.UnixMilli(), HB: m.cfg.Heartbeat.Milliseconds()}).Encode())
	}
	return a
}

// heartbeat keeps a's session alive in the shared store while it is attached here, and
// closes a when the session expired or its identity expired or was revoked. A watch has
// only its identity checked.
func (m *Manager) heartbeat(a *Attachment) {
	ctx, cancel := context.WithTimeout(context.Background(), min(m.cfg.Heartbeat, m.cfg.StoreTimeout))
	defer cancel()
	sid := a.Claims.SID
	if a.watch {
		// No session: the identity is all there is to check.
	} else if alive, err := m.cfg.Store.TouchSession(ctx, sid, m.cfg.SessionTTL); err == nil && !alive {
		m.cfg.Logger.Info("session expired", "sid", sid, "transport", a.Transport, "remote", a.Remote)
		a.Close(ErrSession)
	}
	// An identity that expired or was revoked loses its attachment within a heartbeat.
	if err := m.revoked(ctx, a.Claims); err != nil {
		a.Close(err)
		return
	}
	if !a.watch {
		m.present(ctx, a)
	}
}

// install makes a its session's attachment on this node and closes the one it replaces,
// unless the Manager is draining or the current one is newer (a higher Seq).
func (m *Manager) install(a *Attachment) error {
	sid := a.Claims.SID
	m.mu.Lock()
	if m.closing != nil {
		e := m.closing
		m.mu.Unlock()
		return e
	}
	prev := m.attached[sid]
	if prev != nil && prev.Seq > a.Seq {
		// A request the client made before its current attachment, arriving late (a poll
		// held up on the way): it must not take over from what the client uses now.
		m.mu.Unlock()
		return ErrSuperseded
	}
	m.attached[sid] = a
	prevParked := prev != nil && m.unparkLocked(prev)
	m.mu.Unlock()
	if prev != nil {
		prev.Close(ErrSuperseded)
		if prevParked {
			m.Detach(prev)
		}
	}
	return nil
}

// subscribeCursor subscribes a to the channels of req's cursor that the session may
// read, records its presence on them, and returns how many resume from a position.
func (m *Manager) subscribeCursor(ctx context.Context, a *Attachment, req AttachRequest) (resumed int) {
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
	return resumed
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
	if a.watch {
		m.unwatch(a)
		return
	}
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
