// Package brokertest helps test brokers and the stores built on them: it checks that a
// broker keeps the contract of broker.Broker (the checks both the in-memory and the Redis
// broker run), and records what a broker delivers (Inbox). For tests only.
package brokertest

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
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
