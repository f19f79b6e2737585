package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/ferryrt/ferry/bridge/memory"
	"github.com/ferryrt/ferry/bridge/redis"
	"github.com/ferryrt/ferry/internal/await"
	"github.com/ferryrt/ferry/internal/fclient"
	"github.com/ferryrt/ferry/internal/redistest"
	"github.com/ferryrt/ferry/session"
)

// gatedBroker holds the first Publish to a channel until the test opens its gate.
type gatedBroker struct {
	Broker
	channel string
	entered chan struct{} // closed when the held Publish has started
	gate    chan struct{}
	once    sync.Once
}

func (b *gatedBroker) Publish(ctx context.Context, channel string, data json.RawMessage, bin []byte) (*session.Message, error) {
	if channel == b.channel {
		held := false
		b.once.Do(func() { held = true })
		if held {
			close(b.entered)
			<-b.gate
		}
	}
	return b.Broker.Publish(ctx, channel, data, bin)
}

// exactlyOnce is the scenario of issue 18 on a server with broker: a client with a
// client identity sends a pub and a send over WebSocket, each processed while its
// connection is cut (so its ack is lost); the session then expires (4005), the client
// negotiates a new one with the same identity and resends both. Each is processed once,
// and the pub's duplicate ack carries the position the first attempt got. expire makes
// the session with the given id expire.
func exactlyOnce(t *testing.T, broker Broker, cfg Config, expire func(t *testing.T, sid string)) {
	ctx := context.Background()
	const cid = "tab-0123456789abcdef"
	gb := &gatedBroker{Broker: broker, channel: "room:once", entered: make(chan struct{}), gate: make(chan struct{})}
	var mu sync.Mutex
	calls := map[string]int{}
	sendEntered, sendGate := make(chan struct{}), make(chan struct{})
	cfg.Broker = gb
	cfg.ClientPublish = []string{"room:*"}
	cfg.OnMessage = func(_ context.Context, u Upstream) error {
		mu.Lock()
		calls[fmt.Sprintf("%s/%d", u.Client, u.Seq)]++
		n := calls[fmt.Sprintf("%s/%d", u.Client, u.Seq)]
		mu.Unlock()
		if u.Client != cid {
			t.Errorf("upstream of session %s came without its client identity: %+v", u.Session, u)
		}
		if n == 1 {
			close(sendEntered)
			<-sendGate
		}
		return nil
	}
	ts := newTestServer(t, cfg)
	await.Until(t, `ts.Ready(ctx) == nil`, func() bool { return ts.Ready(ctx) == nil })

	c := fclient.New(ts.URL)
	c.CID = cid
	if err := c.Negotiate(ctx); err != nil {
		t.Fatal(err)
	}
	first := c.SID
	// cutDuring writes frame on a new WebSocket and cuts the connection once the frame's
	// processing has started (entered), before its ack can be written; then lets the
	// processing finish (gate).
	cutDuring := func(frame map[string]any, entered, gate chan struct{}) {
		t.Helper()
		c.NextAttachment()
		ws, err := c.WebSocket(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if f := <-ws.Frames; f.T != "hello" {
			t.Fatalf("first frame %+v", f)
		}
		if err := ws.WriteFrame(frame); err != nil {
			t.Fatal(err)
		}
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatalf("frame %v never processed", frame)
		}
		ws.Close()
		for f := range ws.Frames {
			if f.T == "ack" {
				t.Fatalf("ack %+v read before the cut", f)
			}
		}
		close(gate)
	}
	pub := map[string]any{"t": "pub", "seq": 1, "ch": "room:once", "d": "hi"}
	send := map[string]any{"t": "send", "seq": 2, "d": "hello"}
	cutDuring(pub, gb.entered, gb.gate)
	cutDuring(send, sendEntered, sendGate)
	var published session.Position
	await.Until(t, "the publish to land at offset 1", func() bool {
		_, top, _, err := broker.Since(ctx, "room:once", session.Position{}, 0)
		published = top
		return err == nil && top.Offset == 1
	})

	expire(t, first)
	var he *fclient.HTTPError
	if _, err := c.Send(ctx, send); !errors.As(err, &he) || he.Code != 4005 {
		t.Fatalf("send on the expired session: %v, want 4005", err)
	}
	if err := c.Negotiate(ctx); err != nil || c.Resumed || c.SID == first {
		t.Fatalf("negotiate after 4005: %v, resumed %v", err, c.Resumed)
	}
	// Resend both, as the client does: again after a backoff while either answer is 4029
	// (its first attempt may still be recording its outcome).
	var acks []fclient.Frame
	inProgress := func(a fclient.Frame) bool { return a.Err != nil && a.Err.Code == 4029 }
	await.Until(t, "both resent frames to be acked", func() bool {
		var err error
		acks, err = c.Send(ctx, pub, send)
		if err != nil {
			t.Fatal(err)
		}
		return len(acks) == 2 && !inProgress(acks[0]) && !inProgress(acks[1])
	})
	if a := acks[0]; !a.Dup || a.Err != nil || a.Ep != published.Epoch || a.Off != published.Offset {
		t.Fatalf("resent pub: ack %+v (error %+v), want a duplicate at %v", a, a.Err, published)
	}
	if a := acks[1]; !a.Dup || a.Err != nil {
		t.Fatalf("resent send: ack %+v (error %+v), want a duplicate", a, a.Err)
	}
	// And over WebSocket on the new session.
	c.NextAttachment()
	ws, err := c.WebSocket(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if err := ws.WriteFrame(send); err != nil {
		t.Fatal(err)
	}
	for f := range ws.Frames {
		if f.T == "ack" {
			if !f.Dup || f.Seq != 2 {
				t.Fatalf("resent send over WebSocket: %+v", f)
			}
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if calls[cid+"/2"] != 1 {
		t.Fatalf("OnMessage called %d times for the send, want once", calls[cid+"/2"])
	}
	if _, top, _, _ := broker.Since(ctx, "room:once", session.Position{}, 0); top != published {
		t.Fatalf("channel at %v after the resend, want %v: published twice", top, published)
	}
}

func TestExactlyOnceAcrossSessionsMemory(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	broker := memory.New(memory.Config{Now: clock})
	t.Cleanup(func() { broker.Close() })
	exactlyOnce(t, broker, Config{SessionTTL: 30 * time.Second}, func(*testing.T, string) {
		mu.Lock()
		now = now.Add(31 * time.Second) // past the session's TTL, within DedupeTTL (60 s)
		mu.Unlock()
	})
	if kept, evicted := broker.DedupeWindows(); kept != 1 || evicted != 0 {
		t.Fatalf("%d dedupe windows (%d evicted), want the client's one", kept, evicted)
	}
}

func TestExactlyOnceAcrossSessionsMiniredis(t *testing.T) {
	mr := miniredis.RunT(t)
	broker := redistest.NewBroker(t, mr, redis.Config{})
	exactlyOnce(t, broker, Config{SessionTTL: 30 * time.Second}, func(t *testing.T, sid string) {
		mr.FastForward(31 * time.Second)
		if mr.Exists("ferry:sess:{" + sid + "}") {
			t.Fatal("session alive past its TTL")
		}
	})
}
