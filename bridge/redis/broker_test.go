package redis_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/ferryrt/ferry/bridge/broker"
	"github.com/ferryrt/ferry/bridge/broker/brokertest"
	"github.com/ferryrt/ferry/bridge/redis"
	"github.com/ferryrt/ferry/internal/await"
	"github.com/ferryrt/ferry/internal/redistest"
	"github.com/ferryrt/ferry/session"
)

func TestRedisPublishAndSince(t *testing.T) {
	mr := miniredis.RunT(t)
	b := redistest.NewBroker(t, mr, redis.Config{})
	ctx := context.Background()
	brokertest.PublishAndSince(t, b)

	// Subscribed but never published: kept for twice the history TTL, not a day.
	brokertest.MustSince(t, b, "room:empty", session.Position{}, 10)
	if ttl := mr.TTL(redis.MetaKey(b, "room:empty")); ttl != 2*broker.DefaultHistoryTTL {
		t.Fatalf("TTL of an empty channel: %v", ttl)
	}
	if ttl := mr.TTL(redis.MetaKey(b, "room:a")); ttl != redis.DefaultChannelTTL {
		t.Fatalf("TTL of a channel with messages: %v", ttl)
	}
	if _, err := b.Publish(ctx, "bad channel", json.RawMessage(`1`), nil); err == nil {
		t.Fatal("published to an invalid channel name")
	}
}

// The checks every broker passes, on a miniredis.
func TestRedisConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) broker.Broker {
		b := redistest.NewBroker(t, miniredis.RunT(t), redis.Config{})
		brokertest.Start(t, b)
		return b
	})
}

func TestRedisHistoryTrimByCount(t *testing.T) {
	mr := miniredis.RunT(t)
	b := redistest.NewBroker(t, mr, redis.Config{History: broker.HistoryConfig{Size: 3}})
	var last *session.Message
	for i := 1; i <= 5; i++ {
		last = brokertest.MustPublish(t, b, "c", fmt.Sprint(i))
	}
	ep := last.Pos.Epoch
	for _, off := range []uint64{0, 1} {
		if msgs, top, ok := brokertest.MustSince(t, b, "c", session.Position{Epoch: ep, Offset: off}, 10); ok || top != last.Pos {
			t.Fatalf("after %d: %v %v %v, want reset", off, brokertest.Offsets(msgs), top, ok)
		}
	}
	msgs, _, ok := brokertest.MustSince(t, b, "c", session.Position{Epoch: ep, Offset: 2}, 10)
	if !ok || fmt.Sprint(brokertest.Offsets(msgs)) != "[3 4 5]" {
		t.Fatalf("after 2: %v %v", brokertest.Offsets(msgs), ok)
	}
	// The channel's two keys, and the ids of its publishes, each expiring soon.
	var state []string
	for _, k := range mr.Keys() {
		if strings.HasPrefix(k, "ferry:pid:") {
			if ttl := mr.TTL(k); ttl <= 0 || ttl > redis.RetryIDTTL {
				t.Errorf("publish id %s: TTL %v, want at most %v", k, ttl, redis.RetryIDTTL)
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
	b := redistest.NewBroker(t, mr, redis.Config{History: broker.HistoryConfig{TTL: time.Minute}})

	brokertest.MustPublish(t, b, "c", "1")
	brokertest.MustPublish(t, b, "c", "2")
	mr.SetTime(t0.Add(40 * time.Second))
	m3 := brokertest.MustPublish(t, b, "c", "3")
	ep := m3.Pos.Epoch

	mr.SetTime(t0.Add(70 * time.Second)) // 1 and 2 are older than a minute, 3 is not
	if _, _, ok := brokertest.MustSince(t, b, "c", session.Position{Epoch: ep}, 10); ok {
		t.Fatal("history still covers offset 1 after its TTL")
	}
	msgs, _, ok := brokertest.MustSince(t, b, "c", session.Position{Epoch: ep, Offset: 2}, 10)
	if !ok || fmt.Sprint(brokertest.Offsets(msgs)) != "[3]" {
		t.Fatalf("after 2: %v %v", brokertest.Offsets(msgs), ok)
	}

	// Past the TTL of the last message the log is gone, but the channel's position
	// stays: a caught-up client resumes without a reset, one behind gets a reset.
	mr.SetTime(t0.Add(110 * time.Second))
	if mr.Exists(redis.LogKey(b, "c")) {
		t.Fatal("log of an idle channel outlived its history TTL")
	}
	if msgs, top, ok := brokertest.MustSince(t, b, "c", m3.Pos, 10); !ok || len(msgs) != 0 || top != m3.Pos {
		t.Fatalf("caught up after the log expired: %v %v %v", brokertest.Offsets(msgs), top, ok)
	}
	if _, _, ok := brokertest.MustSince(t, b, "c", session.Position{Epoch: ep, Offset: 2}, 10); ok {
		t.Fatal("no reset for a position behind an expired log")
	}
	if m4 := brokertest.MustPublish(t, b, "c", "4"); m4.Pos != (session.Position{Epoch: ep, Offset: 4}) {
		t.Fatalf("publish after the log expired: %v", m4.Pos)
	}

	// Past ChannelTTL (24 h by default) the epoch itself goes.
	mr.SetTime(t0.Add(25 * time.Hour))
	if _, top, _ := brokertest.MustSince(t, b, "c", session.Position{}, 10); top.Epoch == ep || top.Offset != 0 {
		t.Fatalf("channel idle past ChannelTTL kept its position %v", top)
	}
}

// When Redis loses a channel's data, the channel starts a new epoch: an old position gets
// a reset, never a message of the new epoch.
func TestRedisNewEpochAfterDataLoss(t *testing.T) {
	mr := miniredis.RunT(t)
	b := redistest.NewBroker(t, mr, redis.Config{})
	old := brokertest.MustPublish(t, b, "c", "1")
	brokertest.MustPublish(t, b, "c", "2")
	mr.FlushAll()
	m := brokertest.MustPublish(t, b, "c", "3")
	if m.Pos.Epoch == old.Pos.Epoch || m.Pos.Offset != 1 {
		t.Fatalf("after a flush: %v, before %v", m.Pos, old.Pos)
	}
	if msgs, top, ok := brokertest.MustSince(t, b, "c", old.Pos, 10); ok || len(msgs) != 0 || top != m.Pos {
		t.Fatalf("old position: %v %v %v", brokertest.Offsets(msgs), top, ok)
	}
	// Only the channel's hash lost (eviction of one key): same rule.
	mr.Del(redis.MetaKey(b, "c"))
	if m2 := brokertest.MustPublish(t, b, "c", "4"); m2.Pos.Epoch == m.Pos.Epoch || m2.Pos.Offset != 1 {
		t.Fatalf("after losing the channel hash: %v", m2.Pos)
	}
}

func TestRedisFanOutBetweenNodes(t *testing.T) {
	mr := miniredis.RunT(t)
	a := redistest.NewBroker(t, mr, redis.Config{})
	b := redistest.NewBroker(t, mr, redis.Config{})
	brokertest.Start(t, a)
	in := brokertest.Start(t, b)
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
		brokertest.MustPublish(t, a, ch, data)
		if ch == "room:1" {
			want = append(want, fmt.Sprintf("%d:%s", len(want)+1, data))
		}
	}
	in.WaitFor(t, "45 messages", func() bool { return len(in.On("room:1")) >= len(want) })
	if got := in.On("room:1"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("delivered %v\nwant %v", got, want)
	}
	if got := in.On("room:unwanted"); len(got) != 0 {
		t.Fatalf("delivered a channel nobody subscribed: %v", got)
	}

	// After Unsubscribe, nothing more of the channel arrives; a later message of
	// another channel proves the pipe still runs.
	if err := b.Unsubscribe(ctx, "room:1"); err != nil {
		t.Fatal(err)
	}
	b.Subscribe(ctx, "room:2")
	brokertest.MustPublish(t, a, "room:1", `"late"`)
	brokertest.MustPublish(t, a, "room:2", `"marker"`)
	in.WaitFor(t, "marker", func() bool { return len(in.On("room:2")) == 1 })
	if got := in.On("room:1"); len(got) != len(want) {
		t.Fatalf("delivered after Unsubscribe: %v", got[len(want):])
	}
}

func TestRedisSessionStore(t *testing.T) {
	mr := miniredis.RunT(t)
	a := redistest.NewBroker(t, mr, redis.Config{})
	b := redistest.NewBroker(t, mr, redis.Config{})
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
	a := redistest.NewBroker(t, mr, redis.Config{})
	b := redistest.NewBroker(t, mr, redis.Config{})
	ctx := context.Background()
	mark := func(br *redis.Broker, key string, seq uint64) bool {
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

	brokertest.CheckLedger(t, []session.Store{a, b}, "c:random")

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

func TestRedisAnnounceReachesOtherNodes(t *testing.T) {
	mr := miniredis.RunT(t)
	a := redistest.NewBroker(t, mr, redis.Config{})
	b := redistest.NewBroker(t, mr, redis.Config{})
	ina, inb := brokertest.Start(t, a), brokertest.Start(t, b)
	if err := a.Announce(context.Background(), "sid1", "0001-aa"); err != nil {
		t.Fatal(err)
	}
	mr.Publish(redis.ControlKey(a), "garbage") // malformed notices are dropped
	if err := a.Announce(context.Background(), "sid2", "0002-bb"); err != nil {
		t.Fatal(err)
	}
	inb.WaitFor(t, "two notices", func() bool {
		return len(inb.Supersedes()) == 2
	})
	got := fmt.Sprint(inb.Supersedes())
	if got != "[sid1/0001-aa sid2/0002-bb]" {
		t.Fatalf("node b got %s", got)
	}
	if own := ina.Supersedes(); len(own) != 0 {
		t.Fatalf("node a got its own notices: %v", own)
	}
}

// The broker's Redis may go away. Meanwhile publishing fails loudly and Ready fails;
// once Redis is back the node resubscribes and delivers what it missed, even on a
// channel where nothing more is published.
func TestRedisOutage(t *testing.T) {
	mr := miniredis.RunT(t)
	b := redistest.NewBroker(t, mr, redis.Config{NoPublishStream: true})
	in := brokertest.Start(t, b)
	ctx := context.Background()
	b.Subscribe(ctx, "quiet")
	b.Subscribe(ctx, "busy")
	m1 := brokertest.MustPublish(t, b, "quiet", "1")
	brokertest.MustPublish(t, b, "busy", "1")
	in.WaitFor(t, "first messages", func() bool { return len(in.On("quiet")) == 1 && len(in.On("busy")) == 1 })

	mr.Close()
	await.Until(t, "Ready to fail", func() bool { return b.Ready(ctx) != nil })
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
	mr.HSet(redis.MetaKey(b, "quiet"), "top", "2")
	if _, err := mr.XAdd(redis.LogKey(b, "quiet"), "2-0", []string{"t", fmt.Sprint(m1.Time + 1), "d", `"missed"`}); err != nil {
		t.Fatal(err)
	}
	if err := mr.Restart(); err != nil {
		t.Fatal(err)
	}
	await.Until(t, "Ready after the restart", func() bool { return b.Ready(ctx) == nil })
	in.WaitFor(t, "the missed message", func() bool { return len(in.On("quiet")) == 2 })
	if got := in.On("quiet"); got[1] != `2:"missed"` {
		t.Fatalf("quiet: %v", got)
	}
	brokertest.MustPublish(t, b, "busy", "2")
	brokertest.MustPublish(t, b, "later", "1")
	in.WaitFor(t, "live again", func() bool { return len(in.On("busy")) == 2 && len(in.On("later")) == 1 })
	if got := in.On("busy"); fmt.Sprint(got) != "[1:1 2:2]" {
		t.Fatalf("busy: %v", got)
	}
}

// A pub/sub connection that goes silent without a reset (a dead link, a frozen Redis
// behind a NAT that dropped the flow) is noticed by the health pings and replaced. The
// silence is real: the pub/sub connection stops carrying anything in either direction,
// so no pong can come back and count as life. A connection that does answer is never
// taken for a silent one, however late this process reads its pongs: the health loop
// counts its own unanswered pings (at GOMAXPROCS=1 on a loaded machine, time since the
// last reply alone replaced a live connection before the freeze, 8 runs in 300).
func TestRedisSilentConnectionReplaced(t *testing.T) {
	mr := miniredis.RunT(t)
	px := redistest.NewStallProxy(t, mr.Addr())
	b := redistest.NewBrokerAt(t, px.Addr(), redis.Config{NoPublishStream: true, HealthInterval: 20 * time.Millisecond})
	in := brokertest.Start(t, b)
	if err := b.Subscribe(context.Background(), "c"); err != nil {
		t.Fatal(err)
	}
	first, _ := redis.PubSub(b)
	if n := px.FreezePubSub(); n != 1 {
		t.Fatalf("%d pub/sub connections to freeze, want 1", n)
	}
	await.Until(t, "a new connection", func() bool {
		ps, up := redis.PubSub(b)
		return ps != nil && ps != first && up
	})
	// Published by another node, it reaches this one on the new connection only.
	brokertest.MustPublish(t, redistest.NewBroker(t, mr, redis.Config{NoPublishStream: true}), "c", "1")
	in.WaitFor(t, "delivery on the new connection", func() bool { return len(in.On("c")) == 1 })
}

func TestRedisBrokerLifecycle(t *testing.T) {
	mr := miniredis.RunT(t)
	ctx := context.Background()
	if _, err := redis.New(ctx, redis.Config{}); err == nil {
		t.Fatal("no URL, no client: accepted")
	}
	if _, err := redis.New(ctx, redis.Config{URL: "redis://" + mr.Addr(), NodeID: "a b"}); err == nil {
		t.Fatal("bad node id accepted")
	}
	down := miniredis.RunT(t)
	addr := down.Addr()
	down.Close()
	if _, err := redis.New(ctx, redis.Config{URL: "redis://" + addr}); err == nil {
		t.Fatal("unreachable Redis accepted")
	}

	// A given client is used and left open.
	rdb := goredis.NewClient(&goredis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	b, err := redis.New(ctx, redis.Config{Client: rdb})
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
	await.Until(t, "ready", func() bool { return b.Ready(ctx) == nil })
	b.Close()
	b.Close()
	if err := b.Ready(ctx); !errors.Is(err, broker.ErrBrokerClosed) {
		t.Fatalf("Ready after Close: %v", err)
	}
	if _, err := b.Publish(ctx, "c", json.RawMessage(`1`), nil); !errors.Is(err, broker.ErrBrokerClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
	if err := b.Subscribe(ctx, "c"); !errors.Is(err, broker.ErrBrokerClosed) {
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
	b := redistest.NewBroker(t, mr, redis.Config{NoPublishStream: true})
	brokertest.Start(t, b)
	ctx := context.Background()
	mr.Set(redis.MetaKey(b, "broken"), "not a hash") // every write to the channel fails
	if _, err := b.Publish(ctx, "broken", json.RawMessage(`1`), nil); err == nil {
		t.Fatal("publish succeeded")
	}
	if err := b.Ready(ctx); err == nil || !strings.Contains(err.Error(), "refuses publishes") {
		t.Fatalf("Ready after a refused publish: %v", err)
	}
	// A publish cut short by its caller says nothing about Redis.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	brokertest.MustPublish(t, b, "fine", "1")
	b.Publish(cancelled, "fine", json.RawMessage(`2`), nil)
	if err := b.Ready(ctx); err != nil {
		t.Fatalf("Ready after a successful publish: %v", err)
	}
}
