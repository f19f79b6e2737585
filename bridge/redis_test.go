package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/ferryrt/ferry/session"
)

// go-redis logs every failed dial on its own; the outage tests cause many on purpose.
type quietRedisLog struct{}

func (quietRedisLog) Printf(context.Context, string, ...any) {}

func init() { redis.SetLogger(quietRedisLog{}) }

// tlog is a slog handler's writer into the test log.
type tlog struct{ t testing.TB }

func (w tlog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// newRedisBroker returns a broker on mr, closed when the test ends.
func newRedisBroker(t testing.TB, mr *miniredis.Miniredis, cfg RedisConfig) *RedisBroker {
	t.Helper()
	return newRedisBrokerAt(t, mr.Addr(), cfg)
}

// newRedisBrokerAt returns a broker on the Redis at addr, closed when the test ends.
func newRedisBrokerAt(t testing.TB, addr string, cfg RedisConfig) *RedisBroker {
	t.Helper()
	cfg.URL = "redis://" + addr
	cfg.HealthInterval = orDefault(cfg.HealthInterval, 50*time.Millisecond)
	cfg.Logger = testLogger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := NewRedisBroker(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// inbox records what a broker delivers.
type inbox struct {
	mu         sync.Mutex
	msgs       []*session.Message
	supersedes []string
	changed    chan struct{}
}

func newInbox() *inbox { return &inbox{changed: make(chan struct{}, 1)} }

func (in *inbox) deliver(m *session.Message) {
	in.mu.Lock()
	in.msgs = append(in.msgs, m)
	in.mu.Unlock()
	in.poke()
}

func (in *inbox) supersede(sid, attachID string) {
	in.mu.Lock()
	in.supersedes = append(in.supersedes, sid+"/"+attachID)
	in.mu.Unlock()
	in.poke()
}

func (in *inbox) poke() {
	select {
	case in.changed <- struct{}{}:
	default:
	}
}

// on returns the messages delivered on channel, as "<offset>:<payload>".
func (in *inbox) on(channel string) []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []string
	for _, m := range in.msgs {
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

// waitFor waits until cond holds, re-checking whenever the inbox changes.
func (in *inbox) waitFor(t testing.TB, what string, cond func() bool) {
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

// eventually polls cond until it holds, for at most 10 s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	newInbox().waitFor(t, what, cond)
}

func startBroker(t testing.TB, b *RedisBroker) *inbox {
	t.Helper()
	in := newInbox()
	if err := b.Start(in.deliver, in.supersede); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	eventually(t, "broker ready", func() bool { return b.Ready(ctx) == nil })
	return in
}

func mustPublish(t testing.TB, b Broker, ch, data string) *session.Message {
	t.Helper()
	m, err := b.Publish(context.Background(), ch, json.RawMessage(data), nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustSince(t testing.TB, b Broker, ch string, pos session.Position, limit int) ([]*session.Message, session.Position, bool) {
	t.Helper()
	msgs, top, ok, err := b.Since(context.Background(), ch, pos, limit)
	if err != nil {
		t.Fatal(err)
	}
	return msgs, top, ok
}

func offsets(msgs []*session.Message) []uint64 {
	out := make([]uint64, len(msgs))
	for i, m := range msgs {
		out[i] = m.Pos.Offset
	}
	return out
}

func TestRedisPublishAndSince(t *testing.T) {
	mr := miniredis.RunT(t)
	b := newRedisBroker(t, mr, RedisConfig{})
	ctx := context.Background()

	// A channel never published has a position, stable across reads.
	_, top, ok := mustSince(t, b, "room:empty", session.Position{}, 10)
	if !ok || top.Epoch == "" || top.Offset != 0 {
		t.Fatalf("empty channel: top %v ok %v", top, ok)
	}
	if _, again, _ := mustSince(t, b, "room:empty", session.Position{}, 10); again != top {
		t.Fatalf("epoch changed between reads: %v then %v", top, again)
	}
	// Subscribed but never published: kept for twice the history TTL, not a day.
	if ttl := mr.TTL(b.keys.meta("room:empty")); ttl != 2*DefaultHistoryTTL {
		t.Fatalf("TTL of an empty channel: %v", ttl)
	}

	m1 := mustPublish(t, b, "room:a", `{"n":1}`)
	m2, err := b.Publish(ctx, "room:a", nil, []byte("\x00\xffbin"))
	if err != nil {
		t.Fatal(err)
	}
	m3 := mustPublish(t, b, "room:a", `[3]`)
	if m1.Pos.Offset != 1 || m2.Pos.Offset != 2 || m3.Pos.Offset != 3 || m1.Pos.Epoch != m3.Pos.Epoch || m1.Time == 0 {
		t.Fatalf("positions %v %v %v, time %d", m1.Pos, m2.Pos, m3.Pos, m1.Time)
	}
	ep := m1.Pos.Epoch
	if ttl := mr.TTL(b.keys.meta("room:a")); ttl != DefaultChannelTTL {
		t.Fatalf("TTL of a channel with messages: %v", ttl)
	}

	msgs, top, ok := mustSince(t, b, "room:a", session.Position{}, 10)
	if !ok || len(msgs) != 0 || top != m3.Pos {
		t.Fatalf("zero position: %d msgs, top %v, ok %v", len(msgs), top, ok)
	}
	msgs, top, ok = mustSince(t, b, "room:a", session.Position{Epoch: ep}, 10)
	if !ok || top != m3.Pos || len(msgs) != 3 {
		t.Fatalf("from 0: %v %v %v", offsets(msgs), top, ok)
	}
	if string(msgs[0].Data) != `{"n":1}` || msgs[1].Data != nil || string(msgs[1].Bin) != "\x00\xffbin" || string(msgs[2].Data) != `[3]` {
		t.Fatalf("payloads: %q %q/%q %q", msgs[0].Data, msgs[1].Data, msgs[1].Bin, msgs[2].Data)
	}
	if msgs[0].Time != m1.Time {
		t.Fatalf("time from history %d, published %d", msgs[0].Time, m1.Time)
	}
	if msgs, _, ok = mustSince(t, b, "room:a", session.Position{Epoch: ep, Offset: 1}, 1); !ok || len(msgs) != 1 || msgs[0].Pos.Offset != 2 {
		t.Fatalf("page after 1: %v %v", offsets(msgs), ok)
	}
	if msgs, _, ok = mustSince(t, b, "room:a", m3.Pos, 10); !ok || len(msgs) != 0 {
		t.Fatalf("caught up: %v %v", offsets(msgs), ok)
	}
	for _, pos := range []session.Position{{Epoch: "other", Offset: 1}, {Epoch: ep, Offset: 4}, {Epoch: ep, Offset: 1<<64 - 1}} {
		if msgs, top, ok = mustSince(t, b, "room:a", pos, 10); ok || len(msgs) != 0 || top != m3.Pos {
			t.Fatalf("Since(%v) = %v %v %v, want a reset to %v", pos, offsets(msgs), top, ok, m3.Pos)
		}
	}
	if _, err := b.Publish(ctx, "bad channel", json.RawMessage(`1`), nil); err == nil {
		t.Fatal("published to an invalid channel name")
	}
}

func TestRedisHistoryTrimByCount(t *testing.T) {
	mr := miniredis.RunT(t)
	b := newRedisBroker(t, mr, RedisConfig{History: HistoryConfig{Size: 3}})
	var last *session.Message
	for i := 1; i <= 5; i++ {
		last = mustPublish(t, b, "c", fmt.Sprint(i))
	}
	ep := last.Pos.Epoch
	for _, off := range []uint64{0, 1} {
		if msgs, top, ok := mustSince(t, b, "c", session.Position{Epoch: ep, Offset: off}, 10); ok || top != last.Pos {
			t.Fatalf("after %d: %v %v %v, want reset", off, offsets(msgs), top, ok)
		}
	}
	msgs, _, ok := mustSince(t, b, "c", session.Position{Epoch: ep, Offset: 2}, 10)
	if !ok || fmt.Sprint(offsets(msgs)) != "[3 4 5]" {
		t.Fatalf("after 2: %v %v", offsets(msgs), ok)
	}
	// The channel's two keys, and the ids of its publishes, each expiring soon.
	var state []string
	for _, k := range mr.Keys() {
		if strings.HasPrefix(k, "ferry:pid:") {
			if ttl := mr.TTL(k); ttl <= 0 || ttl > retryIDTTL {
				t.Errorf("publish id %s: TTL %v, want at most %v", k, ttl, retryIDTTL)
			}
			continue
		}
		state = append(state, k)
	}
	if len(state) != 2 {
		t.Fatalf("keys: %v", mr.Keys())
	}
}

func TestRedisHistoryTrimByAge(t *testing.T) {
	mr := miniredis.RunT(t)
	mr.ClockTTL(true) // key expiry follows SetTime, like TIME does
	t0 := time.Now()
	mr.SetTime(t0)
	b := newRedisBroker(t, mr, RedisConfig{History: HistoryConfig{TTL: time.Minute}})

	mustPublish(t, b, "c", "1")
	mustPublish(t, b, "c", "2")
	mr.SetTime(t0.Add(40 * time.Second))
	m3 := mustPublish(t, b, "c", "3")
	ep := m3.Pos.Epoch

	mr.SetTime(t0.Add(70 * time.Second)) // 1 and 2 are older than a minute, 3 is not
	if _, _, ok := mustSince(t, b, "c", session.Position{Epoch: ep}, 10); ok {
		t.Fatal("history still covers offset 1 after its TTL")
	}
	msgs, _, ok := mustSince(t, b, "c", session.Position{Epoch: ep, Offset: 2}, 10)
	if !ok || fmt.Sprint(offsets(msgs)) != "[3]" {
		t.Fatalf("after 2: %v %v", offsets(msgs), ok)
	}

	// Past the TTL of the last message the log is gone, but the channel's position
	// stays: a caught-up client resumes without a reset, one behind gets a reset.
	mr.SetTime(t0.Add(110 * time.Second))
	if mr.Exists(b.keys.log("c")) {
		t.Fatal("log of an idle channel outlived its history TTL")
	}
	if msgs, top, ok := mustSince(t, b, "c", m3.Pos, 10); !ok || len(msgs) != 0 || top != m3.Pos {
		t.Fatalf("caught up after the log expired: %v %v %v", offsets(msgs), top, ok)
	}
	if _, _, ok := mustSince(t, b, "c", session.Position{Epoch: ep, Offset: 2}, 10); ok {
		t.Fatal("no reset for a position behind an expired log")
	}
	if m4 := mustPublish(t, b, "c", "4"); m4.Pos != (session.Position{Epoch: ep, Offset: 4}) {
		t.Fatalf("publish after the log expired: %v", m4.Pos)
	}

	// Past ChannelTTL (24 h by default) the epoch itself goes.
	mr.SetTime(t0.Add(25 * time.Hour))
	if _, top, _ := mustSince(t, b, "c", session.Position{}, 10); top.Epoch == ep || top.Offset != 0 {
		t.Fatalf("channel idle past ChannelTTL kept its position %v", top)
	}
}

// When Redis loses a channel's data, the channel starts a new epoch: an old position gets
// a reset, never a message of the new epoch.
func TestRedisNewEpochAfterDataLoss(t *testing.T) {
	mr := miniredis.RunT(t)
	b := newRedisBroker(t, mr, RedisConfig{})
	old := mustPublish(t, b, "c", "1")
	mustPublish(t, b, "c", "2")
	mr.FlushAll()
	m := mustPublish(t, b, "c", "3")
	if m.Pos.Epoch == old.Pos.Epoch || m.Pos.Offset != 1 {
		t.Fatalf("after a flush: %v, before %v", m.Pos, old.Pos)
	}
	if msgs, top, ok := mustSince(t, b, "c", old.Pos, 10); ok || len(msgs) != 0 || top != m.Pos {
		t.Fatalf("old position: %v %v %v", offsets(msgs), top, ok)
	}
	// Only the channel's hash lost (eviction of one key): same rule.
	mr.Del(b.keys.meta("c"))
	if m2 := mustPublish(t, b, "c", "4"); m2.Pos.Epoch == m.Pos.Epoch || m2.Pos.Offset != 1 {
		t.Fatalf("after losing the channel hash: %v", m2.Pos)
	}
}

func TestRedisFanOutBetweenNodes(t *testing.T) {
	mr := miniredis.RunT(t)
	a := newRedisBroker(t, mr, RedisConfig{})
	b := newRedisBroker(t, mr, RedisConfig{})
	startBroker(t, a)
	in := startBroker(t, b)
	ctx := context.Background()
	if err := b.Subscribe(ctx, "room:1"); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := 1; i <= 50; i++ {
		ch, data := "room:1", fmt.Sprintf(`{"i":%d}`, i)
		if i%10 == 0 {
			ch = "room:unwanted"
		}
		mustPublish(t, a, ch, data)
		if ch == "room:1" {
			want = append(want, fmt.Sprintf("%d:%s", len(want)+1, data))
		}
	}
	in.waitFor(t, "45 messages", func() bool { return len(in.on("room:1")) >= len(want) })
	if got := in.on("room:1"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("delivered %v\nwant %v", got, want)
	}
	if got := in.on("room:unwanted"); len(got) != 0 {
		t.Fatalf("delivered a channel nobody subscribed: %v", got)
	}

	// After Unsubscribe, nothing more of the channel arrives; a later message of
	// another channel proves the pipe still runs.
	if err := b.Unsubscribe(ctx, "room:1"); err != nil {
		t.Fatal(err)
	}
	b.Subscribe(ctx, "room:2")
	mustPublish(t, a, "room:1", `"late"`)
	mustPublish(t, a, "room:2", `"marker"`)
	in.waitFor(t, "marker", func() bool { return len(in.on("room:2")) == 1 })
	if got := in.on("room:1"); len(got) != len(want) {
		t.Fatalf("delivered after Unsubscribe: %v", got[len(want):])
	}
}

func TestRedisSessionStore(t *testing.T) {
	mr := miniredis.RunT(t)
	a := newRedisBroker(t, mr, RedisConfig{})
	b := newRedisBroker(t, mr, RedisConfig{})
	ctx := context.Background()

	if alive, err := a.TouchSession(ctx, "nope", time.Minute); err != nil || alive {
		t.Fatalf("unknown session: %v %v", alive, err)
	}
	if err := a.CreateSession(ctx, "s1", time.Minute); err != nil {
		t.Fatal(err)
	}
	if alive, err := b.TouchSession(ctx, "s1", time.Minute); err != nil || !alive {
		t.Fatalf("session created on a, touched on b: %v %v", alive, err)
	}
	mr.FastForward(2 * time.Minute)
	if alive, _ := a.TouchSession(ctx, "s1", time.Minute); alive {
		t.Fatal("session alive after its TTL")
	}
}

// The dedupe window is shared by the nodes, outlives sessions by its own TTL, and
// behaves exactly like session.Ledger (and so session.Window), including far jumps and
// sequence numbers beyond what a Lua number holds.
func TestRedisDedupeStore(t *testing.T) {
	mr := miniredis.RunT(t)
	a := newRedisBroker(t, mr, RedisConfig{})
	b := newRedisBroker(t, mr, RedisConfig{})
	ctx := context.Background()
	mark := func(br *RedisBroker, key string, seq uint64) bool {
		t.Helper()
		first, _, err := br.MarkUpstream(ctx, key, seq, "", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return first
	}
	// Whichever node sees a seq first processes it.
	if !mark(a, "c:k1", 1) || mark(b, "c:k1", 1) || mark(a, "c:k1", 1) || !mark(b, "c:k1", 2) || mark(a, "c:k1", 2) || mark(a, "c:k1", 0) {
		t.Fatal("dedupe across nodes")
	}
	if !mark(a, "c:k2", 1) {
		t.Fatal("another key shares the window")
	}
	if got := mr.Keys(); !slices.Contains(got, "ferry:up:{c:k1}") || !slices.Contains(got, "ferry:up:{c:k2}") {
		t.Fatalf("keys %v: want one hash per dedupe key", got)
	}

	checkLedger(t, []session.Store{a, b}, "c:random")

	// The window lasts its TTL after the latest mark, and no longer.
	mr.FastForward(50 * time.Second)
	if mark(a, "c:k1", 1) {
		t.Fatal("window lost within its TTL")
	}
	mr.FastForward(61 * time.Second)
	if mr.Exists("ferry:up:{c:k1}") {
		t.Fatal("the window outlived its TTL")
	}
}

// checkLedger drives the dedupe window key of stores (in turn) with a random walk of
// marks and records, and compares every answer with session.Ledger's.
func checkLedger(t *testing.T, stores []session.Store, key string) {
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

func TestRedisAnnounceReachesOtherNodes(t *testing.T) {
	mr := miniredis.RunT(t)
	a := newRedisBroker(t, mr, RedisConfig{})
	b := newRedisBroker(t, mr, RedisConfig{})
	ina, inb := startBroker(t, a), startBroker(t, b)
	if err := a.Announce(context.Background(), "sid1", "0001-aa"); err != nil {
		t.Fatal(err)
	}
	mr.Publish(a.keys.control(), "garbage") // malformed notices are dropped
	if err := a.Announce(context.Background(), "sid2", "0002-bb"); err != nil {
		t.Fatal(err)
	}
	inb.waitFor(t, "two notices", func() bool {
		inb.mu.Lock()
		defer inb.mu.Unlock()
		return len(inb.supersedes) == 2
	})
	inb.mu.Lock()
	got := fmt.Sprint(inb.supersedes)
	inb.mu.Unlock()
	if got != "[sid1/0001-aa sid2/0002-bb]" {
		t.Fatalf("node b got %s", got)
	}
	ina.mu.Lock()
	defer ina.mu.Unlock()
	if len(ina.supersedes) != 0 {
		t.Fatalf("node a got its own notices: %v", ina.supersedes)
	}
}

// The broker's Redis may go away. Meanwhile publishing fails loudly and Ready fails;
// once Redis is back the node resubscribes and delivers what it missed, even on a
// channel where nothing more is published.
func TestRedisOutage(t *testing.T) {
	mr := miniredis.RunT(t)
	b := newRedisBroker(t, mr, RedisConfig{NoPublishStream: true})
	in := startBroker(t, b)
	ctx := context.Background()
	b.Subscribe(ctx, "quiet")
	b.Subscribe(ctx, "busy")
	m1 := mustPublish(t, b, "quiet", "1")
	mustPublish(t, b, "busy", "1")
	in.waitFor(t, "first messages", func() bool { return len(in.on("quiet")) == 1 && len(in.on("busy")) == 1 })

	mr.Close()
	eventually(t, "Ready to fail", func() bool { return b.Ready(ctx) != nil })
	if _, err := b.Publish(ctx, "busy", json.RawMessage(`2`), nil); err == nil {
		t.Fatal("publish while Redis is down did not fail")
	}
	if err := b.Announce(ctx, "s", "a"); err == nil {
		t.Fatal("announce while Redis is down did not fail")
	}
	if _, err := b.TouchSession(ctx, "s", time.Second); err == nil {
		t.Fatal("touch while Redis is down did not fail")
	}
	// A subscription made while down takes effect with the next connection.
	if err := b.Subscribe(ctx, "later"); err != nil {
		t.Fatal(err)
	}

	// What another node published while this one had no connection: message 2 of
	// "quiet", written straight into Redis's data.
	mr.HSet(b.keys.meta("quiet"), "top", "2")
	if _, err := mr.XAdd(b.keys.log("quiet"), "2-0", []string{"t", fmt.Sprint(m1.Time + 1), "d", `"missed"`}); err != nil {
		t.Fatal(err)
	}
	if err := mr.Restart(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Ready after the restart", func() bool { return b.Ready(ctx) == nil })
	in.waitFor(t, "the missed message", func() bool { return len(in.on("quiet")) == 2 })
	if got := in.on("quiet"); got[1] != `2:"missed"` {
		t.Fatalf("quiet: %v", got)
	}
	mustPublish(t, b, "busy", "2")
	mustPublish(t, b, "later", "1")
	in.waitFor(t, "live again", func() bool { return len(in.on("busy")) == 2 && len(in.on("later")) == 1 })
	if got := in.on("busy"); fmt.Sprint(got) != "[1:1 2:2]" {
		t.Fatalf("busy: %v", got)
	}
}

// A pub/sub connection that goes silent (no reset, no error) is noticed by the health
// check and replaced.
// A pub/sub connection that goes silent without a reset (a dead link, a frozen Redis
// behind a NAT that dropped the flow) is noticed by the health pings and replaced. The
// silence is real: the pub/sub connection stops carrying anything in either direction,
// so no pong can come back and count as life (backdating lastSeen instead let
// a pong in flight undo it, one run in ten at GOMAXPROCS=1).
func TestRedisSilentConnectionReplaced(t *testing.T) {
	mr := miniredis.RunT(t)
	px := newStallProxy(t, mr.Addr())
	b := newRedisBrokerAt(t, px.Addr(), RedisConfig{NoPublishStream: true, HealthInterval: 20 * time.Millisecond})
	in := startBroker(t, b)
	if err := b.Subscribe(context.Background(), "c"); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	first := b.ps
	b.mu.Unlock()
	if n := px.freezePubSub(); n != 1 {
		t.Fatalf("%d pub/sub connections to freeze, want 1", n)
	}
	eventually(t, "a new connection", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.ps != nil && b.ps != first && b.up
	})
	// Published by another node, it reaches this one on the new connection only.
	mustPublish(t, newRedisBroker(t, mr, RedisConfig{NoPublishStream: true}), "c", "1")
	in.waitFor(t, "delivery on the new connection", func() bool { return len(in.on("c")) == 1 })
}

func TestRedisBrokerLifecycle(t *testing.T) {
	mr := miniredis.RunT(t)
	ctx := context.Background()
	if _, err := NewRedisBroker(ctx, RedisConfig{}); err == nil {
		t.Fatal("no URL, no client: accepted")
	}
	if _, err := NewRedisBroker(ctx, RedisConfig{URL: "redis://" + mr.Addr(), NodeID: "a b"}); err == nil {
		t.Fatal("bad node id accepted")
	}
	down := miniredis.RunT(t)
	addr := down.Addr()
	down.Close()
	if _, err := NewRedisBroker(ctx, RedisConfig{URL: "redis://" + addr}); err == nil {
		t.Fatal("unreachable Redis accepted")
	}

	// A given client is used and left open.
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	b, err := NewRedisBroker(ctx, RedisConfig{Client: rdb})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Ready(ctx); err == nil {
		t.Fatal("ready before Start")
	}
	if err := b.Start(func(*session.Message) {}, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(func(*session.Message) {}, nil); err == nil {
		t.Fatal("started twice")
	}
	eventually(t, "ready", func() bool { return b.Ready(ctx) == nil })
	b.Close()
	b.Close()
	if err := b.Ready(ctx); !errors.Is(err, ErrBrokerClosed) {
		t.Fatalf("Ready after Close: %v", err)
	}
	if _, err := b.Publish(ctx, "c", json.RawMessage(`1`), nil); !errors.Is(err, ErrBrokerClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
	if err := b.Subscribe(ctx, "c"); !errors.Is(err, ErrBrokerClosed) {
		t.Fatalf("Subscribe after Close: %v", err)
	}
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("the broker closed a client it was given: %v", err)
	}
}

// A Redis that answers PING may still refuse writes (out of memory, a read-only replica
// after a failover): a refused publish makes the node not ready until one succeeds.
func TestRedisReadyFailsWhilePublishesAreRefused(t *testing.T) {
	mr := miniredis.RunT(t)
	b := newRedisBroker(t, mr, RedisConfig{NoPublishStream: true})
	startBroker(t, b)
	ctx := context.Background()
	mr.Set(b.keys.meta("broken"), "not a hash") // every write to the channel fails
	if _, err := b.Publish(ctx, "broken", json.RawMessage(`1`), nil); err == nil {
		t.Fatal("publish succeeded")
	}
	if err := b.Ready(ctx); err == nil || !strings.Contains(err.Error(), "refuses publishes") {
		t.Fatalf("Ready after a refused publish: %v", err)
	}
	// A publish cut short by its caller says nothing about Redis.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	mustPublish(t, b, "fine", "1")
	b.Publish(cancelled, "fine", json.RawMessage(`2`), nil)
	if err := b.Ready(ctx); err != nil {
		t.Fatalf("Ready after a successful publish: %v", err)
	}
}
