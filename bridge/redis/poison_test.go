package redis_test

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/ferryrt/ferry/bridge/broker/brokertest"
	"github.com/ferryrt/ferry/bridge/redis"
	"github.com/ferryrt/ferry/internal/await"
	"github.com/ferryrt/ferry/internal/redistest"
)

// poison is a JSON payload whose string holds bytes that are not UTF-8, as a backend
// passing through text from an old Latin-1 database sends it.
const poison = `{"s":"a` + "\xff\xfe" + `b"}`

// An entry of the Redis publish stream whose data is not UTF-8 is dropped like any
// malformed entry; the entries around it, and binary ones, are published.
func TestRedisPublishStreamDropsInvalidUTF8(t *testing.T) {
	mr := miniredis.RunT(t)
	b := redistest.NewBroker(t, mr, redis.Config{PublishLease: 300 * time.Millisecond})
	in := brokertest.Start(t, b)
	ctx := context.Background()
	b.Subscribe(ctx, "room:x")
	backend := redistest.NewBackendClient(t, mr)
	for _, v := range [][]any{
		{"channel", "room:x", "data", `"before"`},
		{"channel", "room:x", "data", poison},
		{"channel", "room:x", "bin", "\xff\xfe"},
		{"channel", "room:x", "data", `"after"`},
	} {
		if err := backend.XAdd(ctx, &goredis.XAddArgs{Stream: "ferry:publish", Values: v}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	in.WaitFor(t, "three entries", func() bool { return len(in.On("room:x")) >= 3 })
	await.Until(t, "an empty stream", func() bool { return backend.XLen(ctx, "ferry:publish").Val() == 0 })
	if got := in.On("room:x"); len(got) != 3 || got[0] != `1:"before"` || got[1] != "2:bin:\xff\xfe" || got[2] != `3:"after"` {
		t.Fatalf("delivered %q", got)
	}
}
