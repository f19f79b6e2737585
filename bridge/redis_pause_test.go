package bridge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/ferryrt/ferry/bridge/redis"
	"github.com/ferryrt/ferry/internal/await"
	"github.com/ferryrt/ferry/internal/fclient"
	"github.com/ferryrt/ferry/internal/redistest"
)

// pausedRedisTargets are the Redis servers the paused-Redis test runs against: miniredis
// always, and the real redis-server of FERRY_TEST_REDIS_URL when set (scripts/test.sh
// starts one).
func pausedRedisTargets(t *testing.T) map[string]string {
	targets := map[string]string{"miniredis": miniredis.RunT(t).Addr()}
	if raw := os.Getenv("FERRY_TEST_REDIS_URL"); raw != "" {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("FERRY_TEST_REDIS_URL: %v", err)
		}
		targets["redis-server"] = u.Host
	} else {
		t.Log("FERRY_TEST_REDIS_URL not set: running on miniredis only")
	}
	return targets
}

// A Redis that stops answering this node (its requests held in a stall proxy: nothing
// fails, nothing is closed, no answer comes) must not stop what needs no answer: the
// WebSocket and long-poll attachments of channels the node holds keep receiving what
// other nodes publish (it still arrives on the pub/sub connection), while a subscription
// to a new channel waits for its SUBSCRIBE to be confirmed. That wait holds up no other
// channel: the last subscriber of another channel leaves it at once. And every request
// that does need Redis fails when --store-timeout has passed, with 503 and code 4000
// (retry), or for an attachment the close code 4000, instead of hanging.
func TestPausedRedisHoldsOnlyWhatNeedsIt(t *testing.T) {
	for name, addr := range pausedRedisTargets(t) {
		t.Run(name, func(t *testing.T) { testPausedRedis(t, addr) })
	}
}

func testPausedRedis(t *testing.T, addr string) {
	var r [4]byte
	rand.Read(r[:])
	prefix := "ferrypause-" + hex.EncodeToString(r[:])
	px := redistest.NewStallProxy(t, addr)
	// A long health interval: this test is about requests, not about replacing a pub/sub
	// connection that went silent (TestRedisSilentConnectionReplaced).
	node := redistest.NewBrokerAt(t, px.Addr(), redis.Config{Prefix: prefix, NoPublishStream: true, HealthInterval: time.Minute})
	other := redistest.NewBrokerAt(t, addr, redis.Config{Prefix: prefix, NoPublishStream: true}) // another node, not paused
	const storeTimeout = 2 * time.Second
	ts := newTestServer(t, Config{Broker: node, StoreTimeout: storeTimeout})
	publish := func(ch string, n int) {
		t.Helper()
		if _, err := other.Publish(context.Background(), ch, []byte{byte('0' + n)}, nil); err != nil {
			t.Fatal(err)
		}
	}

	// Before the pause: a WebSocket and a long-poll on room:held, a WebSocket alone on
	// room:solo, a WebSocket that will subscribe to a new channel, and a session that
	// has not polled yet.
	ws := ts.client(t)
	ws.Subscribe("room:held", "")
	wsA := attach(t, ws, "websocket")
	defer wsA.close()
	wsA.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "sub" })
	poller := ts.client(t)
	poller.Subscribe("room:held", "")
	frames, _, err := poller.Poll(context.Background(), true, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range frames {
		poller.Track(f)
	}
	solo := ts.client(t)
	solo.Subscribe("room:solo", "")
	soloA := attach(t, solo, "websocket")
	soloA.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "sub" })
	newer := ts.client(t)
	newerS, err := newer.WebSocket(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer newerS.Close()
	late := ts.client(t)
	late.Subscribe("room:held", "")

	// A poll held by the node, waiting for a message.
	type pollResult struct {
		frames []fclient.Frame
		err    error
	}
	held := make(chan pollResult, 1)
	go func() {
		frames, _, err := poller.Poll(context.Background(), false, 30*time.Second)
		held <- pollResult{frames, err}
	}()
	await.Until(t, `ts.Manager().Attached() == 4`, func() bool { return ts.Manager().Attached() == 4 }) // ws, solo, newer, the held poll

	px.HoldRequests()

	// A new channel: its SUBSCRIBE goes out and no confirmation comes back.
	if err := newerS.WriteFrame(map[string]any{"t": "sub", "ch": "room:new"}); err != nil {
		t.Fatal(err)
	}
	pending := func() bool {
		_, waiting := node.Subscribing("room:new")
		return waiting > 0
	}
	await.Until(t, "the pending condition", pending)

	// Meanwhile the channels held keep delivering, on both transports...
	publish("room:held", 1)
	f := wsA.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "msg" })
	if string(f.D) != "1" {
		t.Fatalf("WebSocket got %s, want 1", f.D)
	}
	var res pollResult
	select {
	case res = <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the held poll got no answer")
	}
	if res.err != nil || len(res.frames) == 0 || res.frames[len(res.frames)-1].T != "msg" || string(res.frames[len(res.frames)-1].D) != "1" {
		t.Fatalf("held poll: %+v %v, want the message", res.frames, res.err)
	}
	// ...and the last subscriber of another channel leaves it without waiting for
	// room:new: the broker drops room:solo while room:new is still unconfirmed.
	soloA.close()
	await.Until(t, "the broker to drop room:solo", func() bool {
		wanted, _ := node.Subscribing("room:solo")
		return !wanted
	})
	if !pending() {
		t.Fatal("room:solo left the broker only once room:new's subscription had given up: " +
			"one channel's SUBSCRIBE held up another channel's UNSUBSCRIBE")
	}

	// Requests that need Redis fail with the retry code once their time is up.
	var he *fclient.HTTPError
	if _, _, err := late.Poll(context.Background(), true, 0); !errors.As(err, &he) || he.Status != 503 || he.Code != 4000 {
		t.Errorf("a poll while Redis is paused: %v, want 503 with code 4000", err)
	}
	if err := fclient.New(ts.URL).Negotiate(context.Background()); !errors.As(err, &he) || he.Status != 503 || he.Code != 4000 {
		t.Errorf("a negotiation while Redis is paused: %v, want 503 with code 4000", err)
	}
	// The subscription that could not be confirmed ends its attachment with 4000: the
	// client resumes from its positions, on this node or another.
	var closed fclient.Frame
	for f := range newerS.Frames {
		if f.T == "close" {
			closed = f
			break
		}
	}
	if closed.Code != 4000 {
		t.Errorf("the attachment whose new subscription timed out: close %+v, want code 4000", closed)
	}

	// Redis answers again: so does the node.
	px.Release()
	frames, _, err = late.Poll(context.Background(), true, 0)
	if err != nil {
		t.Fatalf("a poll after the pause: %v", err)
	}
	publish("room:held", 2)
	f = wsA.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "msg" })
	if string(f.D) != "2" {
		t.Fatalf("WebSocket got %s after the pause, want 2", f.D)
	}
}
