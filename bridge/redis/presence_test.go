package redis_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/ferryrt/ferry/bridge/broker/brokertest"
	"github.com/ferryrt/ferry/bridge/presence"
	"github.com/ferryrt/ferry/bridge/redis"
	"github.com/ferryrt/ferry/internal/await"
	"github.com/ferryrt/ferry/internal/redistest"
)

// presence.Store is shared by the nodes: members joined on either are listed on both, every
// change is announced once, and the members of a node that dies without a word leave
// within the TTL plus a sweep, announced by a node still alive.
func TestRedisPresenceAcrossNodes(t *testing.T) {
	mr := miniredis.RunT(t)
	t0 := time.Now()
	mr.SetTime(t0) // presence runs on Redis's clock
	a := redistest.NewBroker(t, mr, redis.Config{NoPublishStream: true})
	b := redistest.NewBroker(t, mr, redis.Config{NoPublishStream: true})
	watcher := redistest.NewBroker(t, mr, redis.Config{NoPublishStream: true})
	brokertest.Start(t, a)
	brokertest.Start(t, b)
	in := brokertest.Start(t, watcher)
	ctx := context.Background()
	watcher.Subscribe(ctx, presence.Channel("room"))

	cfg := presence.Config{TTL: 30 * time.Second, SweepInterval: 20 * time.Millisecond, Logger: brokertest.Logger(t)}
	pa := redis.NewPresence(a, cfg)
	defer pa.Close()
	pb := redis.NewPresence(b, cfg)
	s1, s2 := presence.Member{Session: "s1", User: "ann"}, presence.Member{Session: "s2", User: "bob"}

	if err := pa.Join(ctx, s1, "room"); err != nil {
		t.Fatal(err)
	}
	if err := pb.Join(ctx, s2, "room", "other"); err != nil {
		t.Fatal(err)
	}
	pa.Join(ctx, s1, "room") // refresh: no event
	for _, p := range []presence.Store{pa, pb} {
		if got := brokertest.MemberList(t, p, "room"); got != "[{s1 ann} {s2 bob}]" {
			t.Fatalf("room: %s", got)
		}
	}
	in.WaitFor(t, "two joins", func() bool { return len(in.Events(t, "room")) >= 2 })

	// Node b dies: no Leave, its presence stops refreshing. Node a keeps refreshing s1.
	pb.Close()
	b.Close()
	mr.SetTime(t0.Add(20 * time.Second))
	pa.Join(ctx, s1, "room")
	mr.SetTime(t0.Add(40 * time.Second)) // s2 expired at 30 s, s1 lives until 50 s
	if got := brokertest.MemberList(t, pa, "room"); got != "[{s1 ann}]" {
		t.Fatalf("room after b died: %s", got)
	}
	in.WaitFor(t, "s2 to leave", func() bool { return len(in.Events(t, "room")) >= 3 })
	if got := brokertest.MemberList(t, pa, "other"); got != "[]" {
		t.Fatalf("other after b died: %s", got)
	}

	pa.Leave(ctx, s1, "room")
	pa.Leave(ctx, s1, "room") // once only
	if got := brokertest.MemberList(t, pa, "room"); got != "[]" {
		t.Fatalf("room after s1 left: %s", got)
	}
	in.WaitFor(t, "s1 to leave", func() bool { return len(in.Events(t, "room")) >= 4 })
	if got := fmt.Sprint(in.Events(t, "room")); got != "[join s1 join s2 leave s2 leave s1]" {
		t.Fatalf("events: %s", got)
	}
	await.Until(t, "the sweep index to empty", func() bool { return !mr.Exists(redis.PresenceDueKey(a)) })

	// A member that expired and comes back before a sweep is announced again.
	pa.Close()
	cfg.SweepInterval = time.Hour
	pc := redis.NewPresence(a, cfg)
	defer pc.Close()
	pc.Join(ctx, s1, "room")
	mr.SetTime(t0.Add(100 * time.Second))
	pc.Join(ctx, s1, "room")
	in.WaitFor(t, "the rejoin", func() bool { return len(in.Events(t, "room")) >= 6 })
	if got := fmt.Sprint(in.Events(t, "room")[4:]); got != "[join s1 join s1]" {
		t.Fatalf("events: %s", got)
	}
}
