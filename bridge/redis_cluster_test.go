package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/ferryrt/ferry/bridge/broker/brokertest"
	"github.com/ferryrt/ferry/bridge/redis"
	"github.com/ferryrt/ferry/internal/await"
	"github.com/ferryrt/ferry/internal/fclient"
	"github.com/ferryrt/ferry/internal/redistest"
)

// redisNode is one Server of a cluster sharing a Redis.
type redisNode struct {
	*Server
	broker *redis.Broker
	URL    string // base URL, e.g. http://127.0.0.1:1234/ferry
}

const clusterAPIKey = "backend-key"

func newRedisNode(t *testing.T, mr *miniredis.Miniredis, secret []byte) *redisNode {
	t.Helper()
	b := redistest.NewBroker(t, mr, redis.Config{})
	srv, err := New(Config{
		Secret:        secret,
		Broker:        b,
		APIKey:        clusterAPIKey,
		ClientPublish: []string{"room:*"},
		OnMessage:     redis.UpstreamToStream(b.Client(), redis.UpstreamConfig{}),
		Logger:        brokertest.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	srv.Mount(mux)
	hs := httptest.NewServer(mux)
	closeOnCleanup(t, srv, hs)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	await.Until(t, "node ready", func() bool { return srv.Ready(ctx) == nil })
	return &redisNode{Server: srv, broker: b, URL: hs.URL + srv.Base()}
}

// apiPublish publishes through POST /api/publish and returns the HTTP status.
func (n *redisNode) apiPublish(t *testing.T, channel, data string) int {
	t.Helper()
	body, _ := json.Marshal(PublishRequest{Channel: channel, Data: json.RawMessage(data)})
	req, _ := http.NewRequest(http.MethodPost, n.URL+"/api/publish", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+clusterAPIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// received checks that msg frames arrive exactly once and in order on one channel.
type received struct {
	t     *testing.T
	epoch string
	next  uint64
	data  []string
}

func (r *received) add(c *fclient.Client, frames []fclient.Frame) {
	r.t.Helper()
	for _, f := range frames {
		switch f.T {
		case "sub":
			if r.epoch == "" {
				r.epoch, r.next = f.Ep, f.Off+1
			}
		case "reset":
			r.t.Fatalf("reset: %+v", f)
		case "close":
			r.t.Fatalf("close: %+v", f)
		case "msg":
			if f.Ep != r.epoch || f.Off != r.next {
				r.t.Fatalf("got %s.%d, want %s.%d (a message lost, repeated or reordered)", f.Ep, f.Off, r.epoch, r.next)
			}
			r.next++
			r.data = append(r.data, string(f.D))
		}
		c.Track(f)
	}
}

// The cluster: two nodes sharing a Redis and a secret, no sticky sessions. A client
// negotiates on one node and long-polls the two alternately while messages are
// published through the Go API of one, the HTTP API of the other and the Redis publish
// stream: every message arrives exactly once, in order. Upstream frames resent to the
// other node are acknowledged as duplicates and reach the backend's stream once, and an
// attachment on one node is superseded by a newer one on the other.
func TestRedisClusterNoStickySessions(t *testing.T) {
	mr := miniredis.RunT(t)
	secret := []byte("0123456789abcdef0123456789abcdef")
	nodes := []*redisNode{newRedisNode(t, mr, secret), newRedisNode(t, mr, secret)}
	ctx := context.Background()
	backend := redistest.NewBackendClient(t, mr)

	c := fclient.New(nodes[0].URL)
	if err := c.Negotiate(ctx); err != nil {
		t.Fatal(err)
	}
	c.Subscribe("room:lobby", "")
	got := &received{t: t}
	c.Base = nodes[1].URL
	frames, _, err := c.Poll(ctx, true, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got.add(c, frames)
	if got.epoch == "" {
		t.Fatalf("no sub frame in %+v", frames)
	}

	var want []string
	polls := 0
	for round := range 10 {
		// Hold a poll on one node while the others publish, so live fan-out crosses nodes.
		c.Base = nodes[round%2].URL
		held := make(chan []fclient.Frame, 1)
		go func() {
			f, _, err := c.Poll(ctx, false, 5*time.Second)
			if err != nil {
				t.Error(err)
			}
			held <- f
		}()
		await.Until(t, "the poll attached", func() bool { return nodes[round%2].Manager().Attached() == 1 })
		d := func(i int) string { return fmt.Sprintf(`{"round":%d,"i":%d}`, round, i) }
		if _, err := nodes[(round+1)%2].Publish(ctx, "room:lobby", json.RawMessage(d(1))); err != nil {
			t.Fatal(err)
		}
		if st := nodes[round%2].apiPublish(t, "room:lobby", d(2)); st != http.StatusOK {
			t.Fatalf("publish API: %d", st)
		}
		backend.XAdd(ctx, &goredis.XAddArgs{Stream: "ferry:publish", Values: []any{"channel", "room:lobby", "data", d(3)}})
		want = append(want, d(1), d(2), d(3))
		got.add(c, <-held)
		polls++
		for len(got.data) < len(want) {
			c.Base = nodes[polls%2].URL
			frames, _, err := c.Poll(ctx, false, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			got.add(c, frames)
			polls++
		}
	}
	if fmt.Sprint(got.data) != fmt.Sprint(want) {
		t.Fatalf("received\n%v\nwant\n%v", got.data, want)
	}

	// Upstream: a send and a pub, then the same frames again on the other node (the
	// client did not get the acks).
	sendTo := func(n *redisNode) []fclient.Frame {
		c.Base = n.URL
		acks, err := c.Send(ctx, map[string]any{"t": "send", "seq": 1, "d": json.RawMessage(`{"hello":1}`)},
			map[string]any{"t": "pub", "seq": 2, "ch": "room:lobby", "d": json.RawMessage(`{"from":"client"}`)})
		if err != nil {
			t.Fatal(err)
		}
		return acks
	}
	first, again := sendTo(nodes[0]), sendTo(nodes[1])
	if len(first) != 2 || first[0].Dup || first[0].Err != nil || first[1].Dup || first[1].Off != uint64(len(want)+1) {
		t.Fatalf("first acks: %+v", first)
	}
	if len(again) != 2 || !again[0].Dup || !again[1].Dup {
		t.Fatalf("acks of the resent frames: %+v", again)
	}
	up, err := backend.XRange(ctx, "ferry:upstream", "-", "+").Result()
	if err != nil || len(up) != 1 {
		t.Fatalf("upstream stream: %v %v", up, err)
	}
	if u, err := redis.DecodeUpstream(up[0]); err != nil || u.Session != c.SID || u.Seq != 1 || string(u.Data) != `{"hello":1}` {
		t.Fatalf("upstream entry %+v: %v", u, err)
	}
	want = append(want, `{"from":"client"}`)
	for len(got.data) < len(want) {
		frames, _, err := c.Poll(ctx, false, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		got.add(c, frames)
	}

	// Supersede across nodes: a poll held on node 0 ends (204) when node 1 attaches.
	c.Base = nodes[0].URL
	superseded := make(chan bool, 1)
	go func() {
		c2 := fclient.New(nodes[0].URL)
		c2.Negotiation = c.Negotiation
		c2.Subscribe("room:lobby", c.Position("room:lobby"))
		_, sup, err := c2.Poll(ctx, false, 20*time.Second)
		if err != nil {
			t.Error(err)
		}
		superseded <- sup
	}()
	await.Until(t, "the poll on node 0 attached", func() bool { return nodes[0].Manager().Attached() == 1 })
	c.Base = nodes[1].URL
	frames, _, err = c.Poll(ctx, false, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	got.add(c, frames)
	select {
	case sup := <-superseded:
		if !sup {
			t.Fatal("the older poll was not superseded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the older poll on the other node was not superseded")
	}
	if fmt.Sprint(got.data) != fmt.Sprint(want) {
		t.Fatalf("received\n%v\nwant\n%v", got.data, want)
	}
}

// While Redis is down the nodes say so: not ready, and the publish API answers 503
// rather than "200 and lost". When Redis returns, clients resume from history.
func TestRedisClusterOutage(t *testing.T) {
	mr := miniredis.RunT(t)
	secret := []byte("0123456789abcdef0123456789abcdef")
	a, b := newRedisNode(t, mr, secret), newRedisNode(t, mr, secret)
	ctx := context.Background()
	c := fclient.New(a.URL)
	if err := c.Negotiate(ctx); err != nil {
		t.Fatal(err)
	}
	c.Subscribe("room:o", "")
	got := &received{t: t}
	frames, _, err := c.Poll(ctx, true, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got.add(c, frames)
	if st := a.apiPublish(t, "room:o", `1`); st != http.StatusOK {
		t.Fatal(st)
	}

	mr.Close()
	await.Until(t, "both nodes not ready", func() bool { return a.Ready(ctx) != nil && b.Ready(ctx) != nil })
	if st := b.apiPublish(t, "room:o", `2`); st != http.StatusServiceUnavailable {
		t.Fatalf("publish API while Redis is down: %d", st)
	}
	if _, err := a.Publish(ctx, "room:o", 2); err == nil {
		t.Fatal("Go API publish while Redis is down did not fail")
	}
	c.Base = b.URL
	if _, _, err := c.Poll(ctx, false, time.Second); err == nil {
		t.Fatal("poll while Redis is down succeeded")
	}

	if err := mr.Restart(); err != nil {
		t.Fatal(err)
	}
	await.Until(t, "both nodes ready", func() bool { return a.Ready(ctx) == nil && b.Ready(ctx) == nil })
	if st := b.apiPublish(t, "room:o", `3`); st != http.StatusOK {
		t.Fatal(st)
	}
	for len(got.data) < 2 {
		frames, _, err := c.Poll(ctx, false, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		got.add(c, frames)
	}
	if fmt.Sprint(got.data) != "[1 3]" {
		t.Fatalf("received %v", got.data)
	}
}
