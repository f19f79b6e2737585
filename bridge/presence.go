package bridge

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ferryrt/ferry/session"
)

// Presence tells who is on a channel: the sessions that joined it, with their identity.
// A member stays present until it leaves or until TTL passes without a Join refreshing it,
// so the sessions of a node that dies disappear within TTL plus one sweep interval,
// without anyone saying goodbye. Changes are announced as join and leave events,
// published on the channel's presence channel (PresenceChannel), which subscribers ask
// for by subscribing to it: the events get positions and history like any message.
//
// Implementations are safe for concurrent use.
type Presence interface {
	// Join makes m present on channels, or keeps it present for another TTL. It
	// announces a join on each channel where m was absent.
	Join(ctx context.Context, m PresenceMember, channels ...string) error
	// Leave removes m from channels and announces a leave where it was present.
	Leave(ctx context.Context, m PresenceMember, channels ...string) error
	// List returns the members present on channel, ordered by session.
	List(ctx context.Context, channel string) ([]PresenceMember, error)
	// Close stops the sweeper.
	Close() error
}

// PresenceMember is one session present on a channel.
type PresenceMember struct {
	Session string `json:"session"`
	User    string `json:"user,omitempty"`
}

// PresenceEvent is the payload of a message on a presence channel, for example
// {"event":"join","channel":"room:lobby","session":"hZt…","user":"ann"}.
type PresenceEvent struct {
	Event   string `json:"event"` // PresenceJoin or PresenceLeave
	Channel string `json:"channel"`
	PresenceMember
}

// Presence event names.
const (
	PresenceJoin  = "join"
	PresenceLeave = "leave"
)

// PresenceChannel is the channel of channel's join and leave events.
func PresenceChannel(channel string) string { return "$presence:" + channel }

// PresenceConfig configures a presence store. The zero value is valid.
type PresenceConfig struct {
	// TTL is how long a member stays without a Join refreshing it; default 45 s (three
	// default heartbeats). Keep it longer than the heartbeat plus the long-poll hold: a
	// long-polling session is refreshed by the first poll after each heartbeat interval.
	TTL time.Duration
	// SweepInterval is how often expired members are removed and their leave events
	// published; default TTL/4.
	SweepInterval time.Duration
	Logger        *slog.Logger
	// Now is the clock of MemoryPresence; default time.Now. RedisPresence uses Redis's.
	Now func() time.Time
}

// DefaultPresenceTTL is the default of PresenceConfig.TTL.
const DefaultPresenceTTL = 45 * time.Second

func (c PresenceConfig) withDefaults() PresenceConfig {
	c.TTL = orDefault(c.TTL, DefaultPresenceTTL)
	c.SweepInterval = orDefault(c.SweepInterval, c.TTL/4)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func (m PresenceMember) check() error {
	if m.Session == "" {
		return session.Errorf(session.CodeBadRequest, "presence member without a session")
	}
	return nil
}

func presenceEvent(event, channel string, m PresenceMember) json.RawMessage {
	b, _ := json.Marshal(PresenceEvent{Event: event, Channel: channel, PresenceMember: m})
	return b
}

// Publisher publishes messages; every Broker is one.
type Publisher interface {
	Publish(ctx context.Context, channel string, data json.RawMessage, bin []byte) (*session.Message, error)
}

// MemoryPresence keeps presence in this process, for one node; it publishes events
// through pub (the node's broker), or none if pub is nil.
type MemoryPresence struct {
	cfg PresenceConfig
	pub Publisher

	mu       sync.Mutex
	channels map[string]map[string]memMember // channel → session → member

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

type memMember struct {
	PresenceMember
	expires time.Time
}

// NewMemoryPresence returns a MemoryPresence and starts its sweeper.
func NewMemoryPresence(pub Publisher, cfg PresenceConfig) *MemoryPresence {
	p := &MemoryPresence{cfg: cfg.withDefaults(), pub: pub, channels: make(map[string]map[string]memMember),
		stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p
}

func (p *MemoryPresence) run() {
	defer close(p.done)
	t := time.NewTicker(p.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			if _, err := p.Sweep(context.Background()); err != nil {
				p.cfg.Logger.Warn("presence sweep failed", "err", err)
			}
		}
	}
}

// Close implements Presence.
func (p *MemoryPresence) Close() error {
	p.once.Do(func() { close(p.stop) })
	<-p.done
	return nil
}

// event publishes one event. Presence is best effort towards subscribers: the state is
// kept even if publishing fails, and the error is returned.
func (p *MemoryPresence) event(ctx context.Context, event, channel string, m PresenceMember) error {
	if p.pub == nil {
		return nil
	}
	_, err := p.pub.Publish(ctx, PresenceChannel(channel), presenceEvent(event, channel, m), nil)
	return err
}

// Join implements Presence.
func (p *MemoryPresence) Join(ctx context.Context, m PresenceMember, channels ...string) error {
	if err := m.check(); err != nil {
		return err
	}
	now := p.cfg.Now()
	var joined []string
	p.mu.Lock()
	for _, ch := range channels {
		members := p.channels[ch]
		if members == nil {
			members = make(map[string]memMember)
			p.channels[ch] = members
		}
		old, ok := members[m.Session]
		if !ok || !now.Before(old.expires) {
			joined = append(joined, ch)
		}
		members[m.Session] = memMember{m, now.Add(p.cfg.TTL)}
	}
	p.mu.Unlock()
	var first error
	for _, ch := range joined {
		if err := p.event(ctx, PresenceJoin, ch, m); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Leave implements Presence.
func (p *MemoryPresence) Leave(ctx context.Context, m PresenceMember, channels ...string) error {
	var left []memMember
	var names []string
	p.mu.Lock()
	for _, ch := range channels {
		if old, ok := p.channels[ch][m.Session]; ok {
			delete(p.channels[ch], m.Session)
			if len(p.channels[ch]) == 0 {
				delete(p.channels, ch)
			}
			left, names = append(left, old), append(names, ch)
		}
	}
	p.mu.Unlock()
	var first error
	for i, old := range left {
		if err := p.event(ctx, PresenceLeave, names[i], old.PresenceMember); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// List implements Presence.
func (p *MemoryPresence) List(_ context.Context, channel string) ([]PresenceMember, error) {
	now := p.cfg.Now()
	p.mu.Lock()
	out := make([]PresenceMember, 0, len(p.channels[channel]))
	for _, m := range p.channels[channel] {
		if now.Before(m.expires) {
			out = append(out, m.PresenceMember)
		}
	}
	p.mu.Unlock()
	sortMembers(out)
	return out, nil
}

// Sweep removes the members whose TTL has passed and announces their leave. The
// sweeper calls it every SweepInterval; it returns how many left.
func (p *MemoryPresence) Sweep(ctx context.Context) (int, error) {
	now := p.cfg.Now()
	type gone struct {
		ch string
		m  PresenceMember
	}
	var left []gone
	p.mu.Lock()
	for ch, members := range p.channels {
		for sid, m := range members {
			if !now.Before(m.expires) {
				delete(members, sid)
				left = append(left, gone{ch, m.PresenceMember})
			}
		}
		if len(members) == 0 {
			delete(p.channels, ch)
		}
	}
	p.mu.Unlock()
	var first error
	for _, g := range left {
		if err := p.event(ctx, PresenceLeave, g.ch, g.m); err != nil && first == nil {
			first = err
		}
	}
	return len(left), first
}

func sortMembers(ms []PresenceMember) {
	slices.SortFunc(ms, func(a, b PresenceMember) int { return strings.Compare(a.Session, b.Session) })
}

// PresenceResponse is the answer of the presence endpoint.
type PresenceResponse struct {
	Channel string           `json:"channel"`
	Members []PresenceMember `json:"members"`
}

// NewPresenceHandler returns the backend endpoint that reads presence:
// GET ?channel=<name> with "Authorization: Bearer <apiKey>" answers
// 200 {"channel": ..., "members": [{"session": ..., "user": ...}, ...]}. Without an API
// key it answers 403, like the publish API. Mount it at {Base}/api/presence.
func NewPresenceHandler(p Presence, apiKey string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", "GET")
			apiError(w, http.StatusMethodNotAllowed, session.CodeBadRequest, "presence takes GET")
			return
		}
		if apiKey == "" {
			apiError(w, http.StatusForbidden, session.CodeForbidden, "presence API disabled: the server has no API key (--api-key)")
			return
		}
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(token), []byte(apiKey)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="ferry"`)
			apiError(w, http.StatusUnauthorized, session.CodeUnauthorized, "missing or wrong API key")
			return
		}
		channel := r.URL.Query().Get("channel")
		if err := session.CheckChannel(channel); err != nil {
			e := session.AsError(err)
			apiError(w, http.StatusBadRequest, e.Code, e.Reason)
			return
		}
		members, err := p.List(r.Context(), channel)
		if err != nil {
			apiError(w, http.StatusServiceUnavailable, session.CodeInternal, "presence unavailable")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(PresenceResponse{Channel: channel, Members: members})
	})
}
