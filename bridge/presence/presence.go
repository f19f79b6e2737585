// Package presence tells who is on a channel: the Store interface, its members and
// events, and the in-memory store for one node. The Redis store, shared by many nodes,
// is redis.Presence in bridge/redis, so that this package links no Redis client. The
// bridge joins and leaves members as sessions subscribe, and answers
// GET {base}/api/presence.
package presence

import (
	"cmp"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ferryrt/ferry/bridge/broker"
	"github.com/ferryrt/ferry/session"
)

// Store tells who is on a channel: the sessions that joined it, with their identity.
// A member stays present until it leaves or until TTL passes without a Join refreshing it,
// so the sessions of a node that dies disappear within TTL plus one sweep interval,
// without anyone saying goodbye. Changes are announced as join and leave events,
// published on the channel's presence channel (Channel), which subscribers ask
// for by subscribing to it: the events get positions and history like any message.
//
// Implementations are safe for concurrent use.
type Store interface {
	// Join makes m present on channels, or keeps it present for another TTL. It
	// announces a join on each channel where m was absent.
	Join(ctx context.Context, m Member, channels ...string) error
	// Leave removes m from channels and announces a leave where it was present.
	Leave(ctx context.Context, m Member, channels ...string) error
	// List returns the members present on channel, ordered by session.
	List(ctx context.Context, channel string) ([]Member, error)
	// Close stops the sweeper.
	Close() error
}

// Member is one session present on a channel.
type Member struct {
	Session string `json:"session"`
	User    string `json:"user,omitempty"`
}

// Event is the payload of a message on a presence channel, for example
// {"event":"join","channel":"room:lobby","session":"hZt…","user":"ann"}.
type Event struct {
	Event   string `json:"event"` // Join or Leave
	Channel string `json:"channel"`
	Member
}

// Presence event names.
const (
	Join  = "join"
	Leave = "leave"
)

// Channel is the channel of channel's join and leave events.
func Channel(channel string) string { return "$presence:" + channel }

// Config configures a presence store. The zero value is valid.
type Config struct {
	// TTL is how long a member stays without a Join refreshing it; default 45 s (three
	// default heartbeats). Keep it longer than the heartbeat plus the long-poll hold: a
	// long-polling session is refreshed by the first poll after each heartbeat interval.
	TTL time.Duration
	// SweepInterval is how often expired members are removed and their leave events
	// published; default TTL/4.
	SweepInterval time.Duration
	Logger        *slog.Logger
	// Now is the clock of Memory; default time.Now. redis.Presence uses Redis's.
	Now func() time.Time
}

// DefaultTTL is the default of Config.TTL.
const DefaultTTL = 45 * time.Second

// WithDefaults returns c with its zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	c.TTL = cmp.Or(c.TTL, DefaultTTL)
	c.SweepInterval = cmp.Or(c.SweepInterval, c.TTL/4)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Check returns a bad-request error if m has no session.
func (m Member) Check() error {
	if m.Session == "" {
		return session.Errorf(session.CodeBadRequest, "presence member without a session")
	}
	return nil
}

// EventData returns the payload of an event on channel's presence channel.
func EventData(event, channel string, m Member) json.RawMessage {
	b, _ := json.Marshal(Event{Event: event, Channel: channel, Member: m})
	return b
}

// Memory keeps presence in this process, for one node; it publishes events
// through pub (the node's broker), or none if pub is nil.
type Memory struct {
	cfg Config
	pub broker.Publisher

	mu       sync.Mutex
	channels map[string]map[string]memMember // channel → session → member

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

type memMember struct {
	Member
	expires time.Time
}

// NewMemory returns a Memory and starts its sweeper.
func NewMemory(pub broker.Publisher, cfg Config) *Memory {
	p := &Memory{cfg: cfg.WithDefaults(), pub: pub, channels: make(map[string]map[string]memMember),
		stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p
}

func (p *Memory) run() {
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

// Close implements Store.
func (p *Memory) Close() error {
	p.once.Do(func() { close(p.stop) })
	<-p.done
	return nil
}

// event publishes one event. Presence is best effort towards subscribers: the state is
// kept even if publishing fails, and the error is returned.
func (p *Memory) event(ctx context.Context, event, channel string, m Member) error {
	if p.pub == nil {
		return nil
	}
	_, err := p.pub.Publish(ctx, Channel(channel), EventData(event, channel, m), nil)
	return err
}

// Join implements Store.
func (p *Memory) Join(ctx context.Context, m Member, channels ...string) error {
	if err := m.Check(); err != nil {
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
		if err := p.event(ctx, Join, ch, m); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Leave implements Store.
func (p *Memory) Leave(ctx context.Context, m Member, channels ...string) error {
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
		if err := p.event(ctx, Leave, names[i], old.Member); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// List implements Store.
func (p *Memory) List(_ context.Context, channel string) ([]Member, error) {
	now := p.cfg.Now()
	p.mu.Lock()
	out := make([]Member, 0, len(p.channels[channel]))
	for _, m := range p.channels[channel] {
		if now.Before(m.expires) {
			out = append(out, m.Member)
		}
	}
	p.mu.Unlock()
	SortMembers(out)
	return out, nil
}

// Sweep removes the members whose TTL has passed and announces their leave. The
// sweeper calls it every SweepInterval; it returns how many left.
func (p *Memory) Sweep(ctx context.Context) (int, error) {
	now := p.cfg.Now()
	type gone struct {
		ch string
		m  Member
	}
	var left []gone
	p.mu.Lock()
	for ch, members := range p.channels {
		for sid, m := range members {
			if !now.Before(m.expires) {
				delete(members, sid)
				left = append(left, gone{ch, m.Member})
			}
		}
		if len(members) == 0 {
			delete(p.channels, ch)
		}
	}
	p.mu.Unlock()
	var first error
	for _, g := range left {
		if err := p.event(ctx, Leave, g.ch, g.m); err != nil && first == nil {
			first = err
		}
	}
	return len(left), first
}

// SortMembers orders ms by session, as Store.List returns them.
func SortMembers(ms []Member) {
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.Session, b.Session) })
}
