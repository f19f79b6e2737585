package redis_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/ferryrt/ferry/bridge/broker"
	"github.com/ferryrt/ferry/bridge/broker/brokertest"
	"github.com/ferryrt/ferry/bridge/redis"
	"github.com/ferryrt/ferry/internal/await"
	"github.com/ferryrt/ferry/internal/redistest"
)

// A backend publishes with XADD (as with redis-cli) and every valid entry reaches the
// subscribers once, in stream order, whichever of the nodes reads it; malformed entries
// are dropped without blocking the rest.
func TestRedisPublishStreamInOrderExactlyOnce(t *testing.T) {
	mr := miniredis.RunT(t)
	a := redistest.NewBroker(t, mr, redis.Config{PublishLease: 300 * time.Millisecond})
	b := redistest.NewBroker(t, mr, redis.Config{PublishLease: 300 * time.Millisecond})
	sub := redistest.NewBroker(t, mr, redis.Config{NoPublishStream: true})
	brokertest.Start(t, a)
	brokertest.Start(t, b)
	in := brokertest.Start(t, sub)
	ctx := context.Background()
	sub.Subscribe(ctx, "room:x")
	backend := redistest.NewBackendClient(t, mr)

	xadd := func(values ...any) {
		t.Helper()
		if err := backend.XAdd(ctx, &goredis.XAddArgs{Stream: "ferry:publish", Values: values}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	var want []string
	for i := 1; i <= 60; i++ {
		switch i {
		case 10:
			xadd("channel", "room:x") // no payload
			xadd("data", "1")         // no channel
			xadd("channel", "bad channel", "data", "1")
			xadd("channel", "room:x", "data", "{not json")
			xadd("channel", "room:x", "data", "1", "bin", "x")
		case 20:
			xadd("channel", "room:x", "bin", "\x00\x01")
			want = append(want, fmt.Sprintf("%d:bin:\x00\x01", len(want)+1))
		case 30:
			// Redis forgot its scripts (SCRIPT FLUSH, a restart): the node loads them again.
			backend.ScriptFlush(ctx)
		}
		data := fmt.Sprintf(`{"i": %d}`, i)
		xadd("channel", "room:x", "data", data)
		want = append(want, fmt.Sprintf(`%d:{"i":%d}`, len(want)+1, i))
	}
	in.WaitFor(t, "every entry", func() bool { return len(in.On("room:x")) >= len(want) })
	if got := in.On("room:x"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("delivered\n%q\nwant\n%q", got, want)
	}
	await.Until(t, "an empty stream", func() bool { return backend.XLen(ctx, "ferry:publish").Val() == 0 })
	if p := backend.XPending(ctx, "ferry:publish", redis.PublishGroup).Val(); p.Count != 0 {
		t.Fatalf("entries left pending: %+v", p)
	}
}

// A node that read entries and died without publishing them: once its lease expires,
// another node takes over and publishes them first, in order.
func TestRedisPublishStreamTakeover(t *testing.T) {
	mr := miniredis.RunT(t)
	ctx := context.Background()
	backend := redistest.NewBackendClient(t, mr)
	if err := backend.XGroupCreateMkStream(ctx, "ferry:publish", redis.PublishGroup, "0").Err(); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		backend.XAdd(ctx, &goredis.XAddArgs{Stream: "ferry:publish", Values: []any{"channel", "room:y", "data", fmt.Sprint(i)}})
	}
	// The dead node holds the lease and has read entries 1 and 2.
	backend.Set(ctx, "ferry:publish-lease", "dead", 10*time.Second)
	if err := backend.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: redis.PublishGroup, Consumer: "dead",
		Streams: []string{"ferry:publish", ">"}, Count: 2, Block: -1}).Err(); err != nil {
		t.Fatal(err)
	}

	b := redistest.NewBroker(t, mr, redis.Config{PublishLease: 300 * time.Millisecond})
	in := brokertest.Start(t, b)
	b.Subscribe(ctx, "room:y")
	mr.FastForward(11 * time.Second) // the dead node's lease expires
	in.WaitFor(t, "three messages", func() bool { return len(in.On("room:y")) == 3 })
	if got := in.On("room:y"); fmt.Sprint(got) != "[1:1 2:2 3:3]" {
		t.Fatalf("after the takeover: %v", got)
	}
	if got := backend.Get(ctx, "ferry:publish-lease").Val(); got != b.NodeID() {
		t.Fatalf("lease held by %q", got)
	}
	b.Close()
	if n := backend.Exists(ctx, "ferry:publish-lease").Val(); n != 0 {
		t.Fatal("a closed node kept the lease")
	}
}

// UpstreamToStream appends client messages to a stream that backends read with consumer
// groups: at least once for them, with (session, seq) to deduplicate.
func TestRedisUpstreamConsumerGroup(t *testing.T) {
	mr := miniredis.RunT(t)
	ctx := context.Background()
	backend := redistest.NewBackendClient(t, mr)
	send := redis.UpstreamToStream(backend, redis.UpstreamConfig{})
	ups := []broker.Upstream{
		{Session: "s1", User: "ann", Seq: 1, Data: json.RawMessage(`{"text":"hi"}`)},
		{Session: "s1", User: "ann", Seq: 2, Binary: []byte{0, 1, 2}},
		{Session: "s2", Client: "tab-0123456789abcdef", Seq: 7, Data: json.RawMessage(`"x"`)},
	}
	for _, u := range ups {
		if err := send(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	if err := backend.XGroupCreate(ctx, "ferry:upstream", "svc", "0").Err(); err != nil {
		t.Fatal(err)
	}
	read := func(consumer string) []goredis.XMessage {
		res, err := backend.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "svc", Consumer: consumer,
			Streams: []string{"ferry:upstream", ">"}, Count: 10, Block: -1}).Result()
		if err != nil {
			t.Fatal(err)
		}
		return res[0].Messages
	}
	msgs := read("c1")
	if len(msgs) != 3 {
		t.Fatalf("read %d entries", len(msgs))
	}
	for i, m := range msgs {
		u, err := redis.DecodeUpstream(m)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(u) != fmt.Sprint(ups[i]) {
			t.Fatalf("entry %d: %+v, sent %+v", i, u, ups[i])
		}
	}
	// c1 acknowledges two and dies; c2 claims the third.
	backend.XAck(ctx, "ferry:upstream", "svc", msgs[0].ID, msgs[1].ID)
	claimed, _, err := backend.XAutoClaim(ctx, &goredis.XAutoClaimArgs{Stream: "ferry:upstream", Group: "svc",
		Consumer: "c2", Start: "0-0", Count: 10}).Result()
	if err != nil || len(claimed) != 1 || claimed[0].ID != msgs[2].ID {
		t.Fatalf("claimed %v, %v", claimed, err)
	}

	mr.Close()
	if err := send(ctx, ups[0]); err == nil {
		t.Fatal("upstream while Redis is down did not fail")
	}
}
