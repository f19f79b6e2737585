package redis_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"

	"github.com/alicebob/miniredis/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/ferryrt/ferry/bridge"
	"github.com/ferryrt/ferry/bridge/redis"
	"github.com/ferryrt/ferry/session"
)

// Run several nodes on one Redis: each gets its own broker on the same URL, and the same
// Secret. A message published on one node is in the history every node reads.
func ExampleNew() {
	mr, _ := miniredis.Run() // a real deployment: redis://redis-host:6379/0
	defer mr.Close()
	ctx := context.Background()

	var nodes []*bridge.Server
	for range 2 {
		b, err := redis.New(ctx, redis.Config{URL: "redis://" + mr.Addr() + "/0"})
		if err != nil {
			log.Fatal(err)
		}
		defer b.Close() // the server closes only a broker it created
		srv, err := bridge.New(bridge.Config{Broker: b, Secret: []byte("the same on every node")})
		if err != nil {
			log.Fatal(err)
		}
		defer srv.Shutdown(ctx)
		nodes = append(nodes, srv)
	}

	pos, _ := nodes[0].Publish(ctx, "room:lobby", map[string]string{"text": "hi"})
	msgs, _, ok, _ := nodes[1].Broker().Since(ctx, "room:lobby", session.Position{Epoch: pos.Epoch}, 10)
	fmt.Println(pos.Offset, ok, string(msgs[0].Data))
	// Output: 1 true {"text":"hi"}
}

// Backends that never hold a socket publish with XADD, as with
// redis-cli XADD ferry:publish '*' channel room:lobby data '{"text":"hi"}',
// and read what clients send from the stream UpstreamToStream writes.
func ExampleUpstreamToStream() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	ctx := context.Background()
	backend := goredis.NewClient(&goredis.Options{Addr: mr.Addr()})
	defer backend.Close()

	// The gateway side: what clients send goes to ferry:upstream.
	onMessage := redis.UpstreamToStream(backend, redis.UpstreamConfig{})
	onMessage(ctx, bridge.Upstream{Session: "s1", User: "ann", Seq: 1, Data: json.RawMessage(`{"move":"e4"}`)})

	// The backend side: a consumer group, acknowledging what it processed.
	backend.XGroupCreateMkStream(ctx, "ferry:upstream", "game", "0")
	res, _ := backend.XReadGroup(ctx, &goredis.XReadGroupArgs{
		Group: "game", Consumer: "worker-1", Streams: []string{"ferry:upstream", ">"}, Count: 10, Block: -1,
	}).Result()
	for _, e := range res[0].Messages {
		u, err := redis.DecodeUpstream(e)
		if err != nil {
			continue // not written by Ferry
		}
		fmt.Printf("%s (%s) #%d: %s\n", u.Session, u.User, u.Seq, u.Data)
		backend.XAck(ctx, "ferry:upstream", "game", e.ID)
	}
	// Output: s1 (ann) #1: {"move":"e4"}
}
