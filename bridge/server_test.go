package bridge

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferryrt/ferry/internal/fclient"
	"github.com/ferryrt/ferry/session"
)

// Every transport delivers 1,000 published messages in order with no gap or duplicate,
// and 100 upstream messages reach the handler exactly once, even when a POST's response
// is lost and the POST is sent again.
func TestDeliveryAndUpstreamPerTransport(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ts := newTestServer(t, Config{})
			c := ts.client(t)
			c.Subscribe("room:t", "")
			a := attach(t, c, tr)
			defer a.close()
			if f := a.next(t, 5*time.Second); f.T != "hello" || f.Tr != tr {
				t.Fatalf("first frame %+v, want hello on %s", f, tr)
			}
			if f := a.next(t, 5*time.Second); f.T != "sub" || f.Ch != "room:t" {
				t.Fatalf("second frame %+v, want sub", f)
			}

			const n = 1000
			go func() {
				for i := range n {
					ts.publish(t, "room:t", i)
				}
			}()
			var seq sequence
			for seq.next < n {
				f := a.next(t, 10*time.Second)
				if f.T != "msg" {
					t.Fatalf("unexpected frame %+v", f)
				}
				seq.add(t, f)
			}

			// Upstream: 100 sends in batches of 10; every other batch loses its response
			// and is sent again, as a client does when a request fails.
			lossy := fclient.New(ts.URL)
			lossy.Negotiation = c.Negotiation
			lossy.HTTP = &http.Client{Transport: dropResponse{http.DefaultTransport}}
			for b := range 10 {
				frames := make([]any, 10)
				for i := range frames {
					frames[i] = map[string]any{"t": "send", "seq": b*10 + i + 1, "d": map[string]int{"n": b*10 + i}}
				}
				if b%2 == 1 {
					if _, err := lossy.Send(context.Background(), frames...); !errors.Is(err, errDropped) {
						t.Fatalf("lossy send: %v", err)
					}
				}
				acks, err := c.Send(context.Background(), frames...)
				if err != nil {
					t.Fatal(err)
				}
				for i, ack := range acks {
					if ack.T != "ack" || ack.Seq != uint64(b*10+i+1) || ack.Err != nil || ack.Dup != (b%2 == 1) {
						t.Fatalf("batch %d ack %d: %+v", b, i, ack)
					}
				}
			}
			for seq := uint64(1); seq <= 100; seq++ {
				if got := ts.seenCount(c.SID, seq); got != 1 {
					t.Fatalf("handler saw seq %d %d times, want once", seq, got)
				}
			}
		})
	}
}

var errDropped = errors.New("response dropped")

// dropResponse performs a request and throws its response away, like a network that
// fails after the server has answered.
type dropResponse struct{ rt http.RoundTripper }

func (d dropResponse) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := d.rt.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	return nil, errDropped
}

// Upstream over the WebSocket itself is acked on the socket and deduplicated with the
// same window as POSTs.
func TestWebSocketUpstreamDedupe(t *testing.T) {
	ts := newTestServer(t, Config{ClientPublish: []string{"room:*"}})
	c := ts.client(t)
	c.Subscribe("room:w", "")
	s, err := c.WebSocket(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, f := range []any{
		map[string]any{"t": "send", "seq": 1, "d": "a"},
		map[string]any{"t": "send", "seq": 1, "d": "a"},
		map[string]any{"t": "pub", "seq": 2, "ch": "room:w", "d": "b"},
		map[string]any{"t": "pub", "seq": 3, "ch": "other", "d": "c"},
	} {
		if err := s.WriteFrame(f); err != nil {
			t.Fatal(err)
		}
	}
	var acks []fclient.Frame
	var published []fclient.Frame
	for len(acks) < 4 || len(published) < 1 {
		select {
		case f := <-s.Frames:
			switch f.T {
			case "ack":
				acks = append(acks, f)
			case "msg":
				published = append(published, f)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("got acks %+v and messages %+v", acks, published)
		}
	}
	if acks[0].Dup || !acks[1].Dup {
		t.Errorf("send acks %+v %+v: want first new, second duplicate", acks[0], acks[1])
	}
	if acks[2].Err != nil || acks[2].Off != published[0].Off {
		t.Errorf("pub ack %+v for message %+v", acks[2], published[0])
	}
	if acks[3].Err == nil || acks[3].Err.Code != 4103 {
		t.Errorf("pub to a channel outside ClientPublish acked %+v, want error 4103", acks[3])
	}
	if got := ts.seenCount(c.SID, 1); got != 1 {
		t.Errorf("handler saw seq 1 %d times", got)
	}
}

// A receiver that moves WebSocket -> SSE -> long-poll -> WebSocket while a publisher
// runs sees every message once, in order. Each switch is make-before-break, as the JS
// client does it: the new attachment supersedes the old one.
func TestSwitchTransportsMidStream(t *testing.T) {
	ts := newTestServer(t, Config{})
	c := ts.client(t)
	c.Subscribe("room:s", "")
	a := attach(t, c, "websocket")
	a.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "sub" })

	const n = 800
	var wg sync.WaitGroup
	wg.Add(1)
	stop := make(chan struct{})
	go func() {
		defer wg.Done()
		for i := range n {
			select {
			case <-stop:
				return
			default:
			}
			ts.publish(t, "room:s", i)
			if i%20 == 0 {
				time.Sleep(time.Millisecond) // pace the publisher so switches land mid-stream
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	var seq sequence
	for _, next := range []string{"sse", "longpoll", "websocket", ""} {
		target := seq.next + n/4
		for seq.next < min(target, n) {
			f := a.next(t, 10*time.Second)
			if f.T == "msg" {
				seq.add(t, f)
			}
		}
		if next == "" {
			break
		}
		// Stop reading the old attachment, then start the new one from the cursor.
		old := a
		old.stop()
		for f := range old.frames {
			if f.T == "msg" {
				seq.add(t, f)
			}
		}
		<-old.done
		a = attach(t, c, next)
	}
	for seq.next < n {
		f := a.next(t, 10*time.Second)
		if f.T == "msg" {
			seq.add(t, f)
		}
	}
	a.close()
}

// A position that history no longer covers gets an explicit reset, never a silent gap;
// so does a position of another epoch.
func TestResetWhenHistoryExceeded(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ts := newTestServer(t, Config{History: HistoryConfig{Size: 10}})
			pos, _ := ts.Publish(context.Background(), "room:r", 0)
			for i := 1; i < 50; i++ {
				ts.publish(t, "room:r", i)
			}
			c := ts.client(t)
			c.Subscribe("room:r", pos.String())
			c.Subscribe("room:e", "zzzzzzzz.3") // an epoch the channel never had
			a := attach(t, c, tr)
			defer a.close()
			resets := map[string]fclient.Frame{}
			for len(resets) < 2 {
				f := a.next(t, 5*time.Second)
				switch f.T {
				case "reset":
					resets[f.Ch] = f
				case "msg":
					t.Fatalf("message %s.%d delivered across a gap", f.Ep, f.Off)
				}
			}
			if r := resets["room:r"]; r.Ep != pos.Epoch || r.Off != 50 {
				t.Fatalf("reset %+v, want the latest position %s.50", r, pos.Epoch)
			}
			// After the reset the stream continues live from the position it named.
			ts.publish(t, "room:r", 50)
			f := a.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "msg" })
			if f.Off != 51 || string(f.D) != "50" {
				t.Fatalf("after reset got %+v", f)
			}
		})
	}
}

// A client resuming within history gets exactly what it missed, on any transport.
func TestResumeWithinHistory(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ts := newTestServer(t, Config{})
			pos, _ := ts.Publish(context.Background(), "room:h", -1)
			for i := range 20 {
				ts.publish(t, "room:h", i)
			}
			c := ts.client(t)
			c.Subscribe("room:h", pos.String())
			a := attach(t, c, tr)
			defer a.close()
			if f := a.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T != "hello" }); f.T != "sub" || f.Off != pos.Offset {
				t.Fatalf("got %+v, want sub at %s", f, pos)
			}
			var seq sequence
			seq.epoch, seq.lastOff = pos.Epoch, pos.Offset
			for seq.next < 20 {
				seq.add(t, a.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "msg" }))
			}
		})
	}
}

// Two polls of one session: the older returns 204 having sent nothing, the newer gets
// the messages; nothing is lost or sent twice.
func TestConcurrentPolls(t *testing.T) {
	ts := newTestServer(t, Config{})
	c := ts.client(t)
	c.Subscribe("room:p", "")
	frames, _, err := c.Poll(context.Background(), true, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range frames {
		c.Track(f)
	}
	type result struct {
		frames     []fclient.Frame
		superseded bool
		err        error
	}
	first := make(chan result, 1)
	go func() {
		f, s, err := c.Poll(context.Background(), false, 10*time.Second)
		first <- result{f, s, err}
	}()
	waitUntil(t, func() bool { return ts.Manager().Attached() == 1 })
	second := make(chan result, 1)
	go func() {
		f, s, err := c.Poll(context.Background(), false, 10*time.Second)
		second <- result{f, s, err}
	}()
	r1 := <-first
	if r1.err != nil || !r1.superseded || len(r1.frames) != 0 {
		t.Fatalf("older poll: %+v, want 204 with nothing", r1)
	}
	ts.publish(t, "room:p", 1)
	r2 := <-second
	if r2.err != nil || len(r2.frames) != 1 || r2.frames[0].T != "msg" || r2.frames[0].Off != 1 {
		t.Fatalf("newer poll: %+v", r2)
	}
}

// waitUntil polls cond until it holds, for at most 10 s.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A client that stops reading is disconnected as a slow consumer once its queue bound is
// reached; the server does not keep buffering for it, and others go on receiving.
func TestSlowConsumerDisconnected(t *testing.T) {
	for _, tr := range []string{"websocket", "sse"} {
		t.Run(tr, func(t *testing.T) {
			ts := newTestServer(t, Config{QueueMessages: 64, QueueBytes: 128 << 10})
			slow := ts.client(t)
			slow.Subscribe("room:big", "")
			var s *fclient.Stream
			var err error
			if tr == "websocket" {
				s, err = slow.WebSocket(context.Background())
			} else {
				s, err = slow.SSE(context.Background(), "")
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			// Read up to the sub frame, then never again.
			for f := range s.Frames {
				if f.T == "sub" {
					break
				}
			}
			waitUntil(t, func() bool { return ts.hub.Channels() == 1 })

			fast := ts.client(t)
			fast.Subscribe("room:big", "")
			a := attach(t, fast, "websocket")
			defer a.close()
			a.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "sub" })

			payload := strings.Repeat("x", 4<<10)
			published := 0
			// Publish in lockstep with the fast client until the slow attachment is gone;
			// the bound on the loop is far above what the queue and the socket buffers
			// together can take.
			for ts.Manager().Attached() == 2 && published < 20000 {
				ts.publish(t, "room:big", payload)
				published++
				a.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "msg" })
			}
			if ts.Manager().Attached() != 1 {
				t.Fatalf("slow consumer still attached after %d messages", published)
			}
			t.Logf("slow consumer disconnected after %d messages of %d bytes", published, len(payload))
			ts.publish(t, "room:big", "after")
			a.waitFor(t, 10*time.Second, func(f fclient.Frame) bool { return f.T == "msg" && string(f.D) == `"after"` })
		})
	}
}

// A session that never comes back expires: its credentials stop working and the store
// forgets it.
func TestSessionExpires(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	broker := NewMemoryBroker(MemoryConfig{Now: clock})
	ts := newTestServer(t, Config{Broker: broker, SessionTTL: 30 * time.Second})
	c := ts.client(t)
	if _, _, err := c.Poll(context.Background(), true, 0); err != nil {
		t.Fatal(err)
	}
	if broker.Sessions() != 1 {
		t.Fatalf("%d sessions", broker.Sessions())
	}
	mu.Lock()
	now = now.Add(31 * time.Second)
	mu.Unlock()
	if broker.Sessions() != 0 {
		t.Fatalf("%d sessions after the TTL", broker.Sessions())
	}
	_, _, err := c.Poll(context.Background(), true, 0)
	var he *fclient.HTTPError
	if !errors.As(err, &he) || he.Status != 401 || he.Code != 4005 {
		t.Fatalf("poll of an expired session: %v, want 401 with code 4005", err)
	}
	// Negotiating with the old credential gives a new session, not the old one back.
	if err := c.Negotiate(context.Background()); err != nil || c.Resumed {
		t.Fatalf("renegotiate: %v resumed=%v", err, c.Resumed)
	}
}

// Shutdown closes every attachment with 4003 so that clients reconnect and resume.
func TestShutdownTellsClientsToReconnect(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ts := newTestServer(t, Config{})
			c := ts.client(t)
			a := attach(t, c, tr)
			defer a.close()
			a.next(t, 5*time.Second) // hello
			if tr == "longpoll" {    // the next poll must be held when the drain starts
				waitUntil(t, func() bool { return ts.Manager().Attached() == 1 })
			}
			go ts.Shutdown(context.Background())
			f := a.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "close" })
			if f.Code != 4003 {
				t.Fatalf("close %+v, want 4003", f)
			}
		})
	}
}

// A request the client made before its current attachment (a poll held up on the way)
// arrives late: it gets 204 and the current attachment stays.
func TestLateAttachmentDoesNotTakeOver(t *testing.T) {
	ts := newTestServer(t, Config{})
	c := ts.client(t)
	c.Subscribe("room:l", "")
	c.Att = 5
	s, err := c.WebSocket(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for f := range s.Frames {
		if f.T == "sub" {
			break
		}
	}
	c.Att = 4
	if _, superseded, err := c.Poll(context.Background(), true, 0); err != nil || !superseded {
		t.Fatalf("late poll: superseded=%v err=%v, want 204", superseded, err)
	}
	ts.publish(t, "room:l", 1)
	if f := <-s.Frames; f.T != "msg" {
		t.Fatalf("current attachment got %+v", f)
	}
}

// A node at its session cap refuses new sessions with 503 {"code":4000}, which sends the
// client to another node, while the sessions it has go on: they resume, attach and send.
func TestNegotiateAtSessionCap(t *testing.T) {
	ctx := context.Background()
	ts := newTestServer(t, Config{MaxSessions: 2})
	a, b := ts.client(t), ts.client(t)

	for range 2 { // a refusal leaves no session behind to fill the cap further
		err := fclient.New(ts.URL).Negotiate(ctx)
		var he *fclient.HTTPError
		if !errors.As(err, &he) || he.Status != http.StatusServiceUnavailable || he.Code != 4000 {
			t.Fatalf("negotiate at the cap: %v, want 503 with code 4000", err)
		}
	}
	if err := a.Negotiate(ctx); err != nil || !a.Resumed {
		t.Fatalf("resume at the cap: %v, resumed %v", err, a.Resumed)
	}
	a.Subscribe("room:cap", "")
	frames, _, err := a.Poll(ctx, true, 0)
	if err != nil || len(frames) != 2 || frames[1].T != "sub" {
		t.Fatalf("attach at the cap: %+v, %v", frames, err)
	}
	acks, err := b.Send(ctx, map[string]any{"t": "send", "seq": 1, "d": 0})
	if err != nil || len(acks) != 1 || acks[0].Err != nil || ts.seenCount(b.SID, 1) != 1 {
		t.Fatalf("send at the cap: %+v, %v", acks, err)
	}
}

// The cap's error is errors.Is-able and carries code 4000, and it can't be set on a broker
// the Server did not create.
func TestSessionCapError(t *testing.T) {
	ctx := context.Background()
	b := NewMemoryBroker(MemoryConfig{MaxSessions: 1})
	defer b.Close()
	if err := b.CreateSession(ctx, "s1", time.Minute); err != nil {
		t.Fatal(err)
	}
	err := b.CreateSession(ctx, "s2", time.Minute)
	if !errors.Is(err, ErrTooManySessions) || session.AsError(err).Code != session.CodeReconnect {
		t.Fatalf("second session: %v, want ErrTooManySessions with code 4000", err)
	}
	if session.CodeReconnect.HTTPStatus() != http.StatusServiceUnavailable {
		t.Fatalf("code 4000 answers HTTP %d, want 503", session.CodeReconnect.HTTPStatus())
	}
	if _, err := New(Config{Broker: b, MaxSessions: 5}); err == nil {
		t.Fatal("New accepted MaxSessions for a broker it doesn't own")
	}
}
