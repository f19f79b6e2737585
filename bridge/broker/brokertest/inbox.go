package brokertest

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ferryrt/ferry/bridge/broker"
	"github.com/ferryrt/ferry/bridge/presence"
	"github.com/ferryrt/ferry/internal/await"
	"github.com/ferryrt/ferry/session"
)

// Inbox records what a broker delivers (Broker.Start's deliver and supersede).
type Inbox struct {
	mu         sync.Mutex
	msgs       []*session.Message
	supersedes []string
	changed    chan struct{}
}

// NewInbox returns an empty Inbox.
func NewInbox() *Inbox { return &Inbox{changed: make(chan struct{}, 1)} }

// Deliver records m; give it to Broker.Start.
func (in *Inbox) Deliver(m *session.Message) {
	in.mu.Lock()
	in.msgs = append(in.msgs, m)
	in.mu.Unlock()
	in.poke()
}

// Supersede records an attachment notice as "sid/attachID"; give it to Broker.Start.
func (in *Inbox) Supersede(sid, attachID string) {
	in.mu.Lock()
	in.supersedes = append(in.supersedes, sid+"/"+attachID)
	in.mu.Unlock()
	in.poke()
}

func (in *Inbox) poke() {
	select {
	case in.changed <- struct{}{}:
	default:
	}
}

// Messages returns the messages delivered so far.
func (in *Inbox) Messages() []*session.Message {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]*session.Message(nil), in.msgs...)
}

// Supersedes returns the attachment notices delivered so far, as "sid/attachID".
func (in *Inbox) Supersedes() []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]string(nil), in.supersedes...)
}

// On returns the messages delivered on channel, as "<offset>:<payload>".
func (in *Inbox) On(channel string) []string {
	var out []string
	for _, m := range in.Messages() {
		if m.Channel == channel {
			p := string(m.Data)
			if m.Bin != nil {
				p = "bin:" + string(m.Bin)
			}
			out = append(out, fmt.Sprintf("%d:%s", m.Pos.Offset, p))
		}
	}
	return out
}

// Events decodes the presence events delivered on channel's presence channel, as
// "join s1" and "leave s2".
func (in *Inbox) Events(t testing.TB, channel string) []string {
	t.Helper()
	var out []string
	for _, m := range in.Messages() {
		if m.Channel != presence.Channel(channel) {
			continue
		}
		var ev presence.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil || ev.Channel != channel {
			t.Fatalf("presence event %s: %v", m.Data, err)
		}
		out = append(out, ev.Event+" "+ev.Session)
	}
	return out
}

// WaitFor waits until cond holds, re-checking whenever the inbox changes, for at most
// 10 s.
func (in *Inbox) WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond) // for conditions outside the inbox
	defer tick.Stop()
	for !cond() {
		select {
		case <-in.changed:
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// Start starts b with a new Inbox and waits until b is ready.
func Start(t testing.TB, b broker.Broker) *Inbox {
	t.Helper()
	in := NewInbox()
	if err := b.Start(in.Deliver, in.Supersede); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	await.Until(t, "broker ready", func() bool { return b.Ready(ctx) == nil })
	return in
}
