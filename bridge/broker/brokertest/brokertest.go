// Package brokertest helps test brokers and the stores built on them: it checks that a
// broker keeps the contract of broker.Broker (the checks both the in-memory and the Redis
// broker run), and records what a broker delivers (Inbox). For tests only.
package brokertest

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferryrt/ferry/bridge/broker"
	"github.com/ferryrt/ferry/bridge/memory"
	"github.com/ferryrt/ferry/bridge/presence"
	"github.com/ferryrt/ferry/session"
)

// tlog is a slog handler's writer into the test log.
type tlog struct{ t testing.TB }

func (w tlog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// Logger returns a logger writing into t's log, from level Info.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

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

// Eventually polls cond until it holds, for at most 10 s.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	NewInbox().WaitFor(t, what, cond)
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
	Eventually(t, "broker ready", func() bool { return b.Ready(ctx) == nil })
	return in
}

// MustPublish publishes data on ch, failing t on an error.
func MustPublish(t testing.TB, b broker.Publisher, ch, data string) *session.Message {
	t.Helper()
	m, err := b.Publish(context.Background(), ch, json.RawMessage(data), nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// MustSince reads ch after pos, failing t on an error.
func MustSince(t testing.TB, b broker.Broker, ch string, pos session.Position, limit int) ([]*session.Message, session.Position, bool) {
	t.Helper()
	msgs, top, ok, err := b.Since(context.Background(), ch, pos, limit)
	if err != nil {
		t.Fatal(err)
	}
	return msgs, top, ok
}

// Offsets returns the offsets of msgs.
func Offsets(msgs []*session.Message) []uint64 {
	out := make([]uint64, len(msgs))
	for i, m := range msgs {
		out[i] = m.Pos.Offset
	}
	return out
}

// MemberList returns the members p lists on channel, printed.
func MemberList(t testing.TB, p presence.Store, channel string) string {
	t.Helper()
	ms, err := p.List(context.Background(), channel)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(ms)
}

// Clock is a clock for tests, moved by hand; its zero value reads the zero time.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a Clock reading now.
func NewClock(now time.Time) *Clock { return &Clock{now: now} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Add moves the clock by d.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// CheckLedger drives the dedupe window key of stores (in turn) with a random walk of
// marks and records, and compares every answer with session.Ledger's.
func CheckLedger(t *testing.T, stores []session.Store, key string) {
	t.Helper()
	ctx := context.Background()
	l := session.NewLedger(session.DefaultDedupeWindow)
	rng := rand.New(rand.NewPCG(1, 2))
	seq := uint64(0)
	results := []string{"", "", "?", "pabc.17", "e4103 not allowed: ünïcode"}
	var firsts, dups, replays int
	for i := range 3000 {
		switch r := rng.IntN(100); {
		case i == 2500:
			seq = 1<<63 + uint64(rng.IntN(5000)) // beyond what a Lua number holds exactly
		case r < 50:
			seq++
		case r < 75 && seq > 1:
			seq -= min(seq-1, uint64(rng.IntN(20)))
		case r < 76 && seq > 1:
			seq -= min(seq-1, uint64(rng.IntN(1500)))
		case r < 98:
			seq += uint64(rng.IntN(30))
		default:
			seq += uint64(rng.IntN(3000))
		}
		st := stores[i%len(stores)]
		res := results[rng.IntN(len(results))]
		if rng.IntN(4) == 0 {
			if err := st.RecordUpstream(ctx, key, seq, res, time.Minute); err != nil {
				t.Fatal(err)
			}
			l.Record(seq, res)
			continue
		}
		first, recorded, err := st.MarkUpstream(ctx, key, seq, res, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if wf, wr := l.Mark(seq, res); first != wf || recorded != wr {
			t.Fatalf("step %d: MarkUpstream(%d, %q) = %v %q, session.Ledger says %v %q", i, seq, res, first, recorded, wf, wr)
		}
		switch {
		case first:
			firsts++
		case recorded != "":
			replays++
		default:
			dups++
		}
	}
	// The walk must have tried every case, or it compared nothing that matters.
	if firsts < 100 || dups < 100 || replays < 100 {
		t.Fatalf("walk too narrow: %d first, %d duplicates, %d with a result", firsts, dups, replays)
	}
}

// NewSweptMemory returns a memory.Broker on a Clock whose sweeper never fires during the
// test: the test sweeps by hand (Sweep). It is closed when t ends.
func NewSweptMemory(t testing.TB, cfg memory.Config) (*memory.Broker, *Clock) {
	t.Helper()
	clock := NewClock(time.Now())
	cfg.Now = clock.Now
	cfg.SweepInterval = time.Hour
	b := memory.New(cfg)
	t.Cleanup(func() { b.Close() })
	return b, clock
}

// BenchPayload is a message payload of a typical size (about 120 bytes), for benchmarks.
var BenchPayload = json.RawMessage(`{"p":1,"seq":42,"ts":1700000000000000000,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`)
