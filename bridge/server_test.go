package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferryrt/ferry/bridge/broker"
	"github.com/ferryrt/ferry/bridge/memory"
	"github.com/ferryrt/ferry/internal/await"
	"github.com/ferryrt/ferry/internal/fclient"
	"github.com/ferryrt/ferry/internal/httpx"
	"github.com/ferryrt/ferry/session"
)

// Every transport delivers 1,000 published messages in order with no gap or duplicate,
// and 100 upstream messages reach the handler exactly once although acknowledgements are
// lost and the client resends: over the socket itself for WebSocket, by POST /send (the
// upstream of SSE and long-polling) otherwise.
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

			if tr == "websocket" {
				upstreamOverWebSocket(t, ts, c)
			} else {
				upstreamOverPOST(t, ts, c)
			}
			for seq := uint64(1); seq <= 100; seq++ {
				if got := ts.seenCount(c.SID, seq); got != 1 {
					t.Fatalf("handler saw seq %d %d times, want once", seq, got)
				}
			}
		})
	}
}

// upstreamOverPOST sends 100 frames in batches of 10; every other batch loses its response
// and is sent again, as a client does when a request fails.
func upstreamOverPOST(t *testing.T, ts *testServer, c *fclient.Client) {
	t.Helper()
	lossy := fclient.New(ts.URL)
	lossy.Negotiation = c.Negotiation
	lossy.HTTP = &http.Client{Transport: dropResponse{http.DefaultTransport}}
	for b := range 10 {
		frames := make([]any, 10)
		for i := range frames {
			frames[i] = sendFrame(b*10 + i + 1)
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
}

// upstreamOverWebSocket sends 100 frames over the socket and drops the connection midway:
// after the client has read the acks of 1 to 25 and the server has processed 1 to 50, so
// that the acks of 26 to 50 are lost with the connection. The client reconnects and
// resends everything unacknowledged (26 to 100): 26 to 50 must come back as duplicates.
func upstreamOverWebSocket(t *testing.T, ts *testServer, c *fclient.Client) {
	t.Helper()
	ctx := context.Background()
	c.NextAttachment()
	first, err := c.WebSocket(ctx) // supersedes the downstream attachment of the test
	if err != nil {
		t.Fatal(err)
	}
	for seq := 1; seq <= 50; seq++ {
		if err := first.WriteFrame(sendFrame(seq)); err != nil {
			t.Fatal(err)
		}
	}
	const acked = 25
	for seq := 1; seq <= acked; seq++ {
		if ack := nextAck(t, first); ack.Seq != uint64(seq) || ack.Err != nil || ack.Dup {
			t.Fatalf("ack %+v, want a new seq %d", ack, seq)
		}
	}
	// Once the handler has seen 1 to 50, the acks of 26 to 50 are only on the way.
	await.Until(t, "the handler to see sends 1 to 50", func() bool {
		for seq := uint64(1); seq <= 50; seq++ {
			if ts.seenCount(c.SID, seq) == 0 {
				return false
			}
		}
		return true
	})
	first.Close() // no close handshake: the connection is simply gone

	c.NextAttachment()
	second, err := c.WebSocket(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	for seq := acked + 1; seq <= 100; seq++ {
		if err := second.WriteFrame(sendFrame(seq)); err != nil {
			t.Fatal(err)
		}
	}
	for seq := acked + 1; seq <= 100; seq++ {
		if ack := nextAck(t, second); ack.Seq != uint64(seq) || ack.Err != nil || ack.Dup != (seq <= 50) {
			t.Fatalf("ack %+v for the resent seq %d, want dup=%v", ack, seq, seq <= 50)
		}
	}
}

// truncate shortens err's text for a failure message (a bad frame quotes the frame).
func truncate(err error, n int) string {
	if err == nil {
		return "no error"
	}
	if msg := err.Error(); len(msg) > n {
		return msg[:n] + "..."
	}
	return err.Error()
}

func sendFrame(seq int) any {
	return map[string]any{"t": "send", "seq": seq, "d": map[string]int{"n": seq - 1}}
}

// nextAck returns the next ack frame of s, skipping the others.
func nextAck(t *testing.T, s *fclient.Stream) fclient.Frame {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case f, ok := <-s.Frames:
			if !ok {
				t.Fatalf("stream ended while waiting for an ack: %v", s.Err())
			}
			if f.T == "ack" {
				return f
			}
		case <-timeout:
			t.Fatal("no ack within 5s")
		}
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
	await.Until(t, `ts.Manager().Attached() == 1`, func() bool { return ts.Manager().Attached() == 1 })
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

// A client that reads slower than its channel is published to is disconnected as a slow
// consumer once its queue bound is reached: the server never queues more than the bound
// for it, the client learns why (close code 4002: reconnect and resume), and others go on
// receiving.
func TestSlowConsumerDisconnected(t *testing.T) {
	for _, tr := range []string{"websocket", "sse"} {
		t.Run(tr, func(t *testing.T) {
			const queueMessages, queueBytes = 64, 128 << 10
			// The slow client reads at full speed once it is closed; the grace it gets to take
			// the write under way and the close frame is generous, as the race detector on a
			// busy machine can hold it up for longer than the default second.
			ts := newTestServer(t, Config{QueueMessages: queueMessages, QueueBytes: queueBytes, CloseGrace: 20 * time.Second})
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
			for f := range s.Frames {
				if f.T == "sub" {
					break
				}
			}
			await.Until(t, `ts.hub.Channels() == 1`, func() bool { return ts.hub.Channels() == 1 })

			fast := ts.client(t)
			fast.Subscribe("room:big", "")
			a := attach(t, fast, "websocket")
			defer a.close()
			a.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "sub" })

			// 4 KiB payloads: the byte bound (32 of them) is reached before the count bound.
			payload := strings.Repeat("x", 4<<10)
			published, deepest := 0, 0
			var last fclient.Frame // the latest frame the slow client read
			readSlow := func() bool {
				select {
				case f, ok := <-s.Frames:
					if ok {
						last = f
					}
					return ok
				case <-time.After(10 * time.Second):
					t.Fatalf("slow client read nothing for 10s (last frame %q)", last.T)
					return false
				}
			}
			// Publish in lockstep with the fast client while the slow one reads a frame for
			// every two published, so it falls behind until the server gives up on it, and
			// goes on reading while the server finishes the write under way and sends the
			// close frame. A publish queues its message for every subscriber before it
			// returns, and the fast client has been sent its copy once it has read it, so
			// the depth after each publish is the slow client's queue at its deepest.
			for ts.Manager().Attached() == 2 && published < 20000 {
				ts.publish(t, "room:big", payload)
				published++
				a.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "msg" })
				deepest = max(deepest, ts.Manager().QueueDepth())
				if published%2 == 0 && !readSlow() {
					break
				}
			}
			if ts.Manager().Attached() != 1 {
				t.Fatalf("slow consumer still attached after %d messages", published)
			}
			if deepest == 0 || deepest > queueMessages || deepest*len(payload) > queueBytes {
				t.Fatalf("deepest queue %d frames of %d bytes, bound %d frames or %d bytes", deepest, len(payload), queueMessages, queueBytes)
			}
			for readSlow() {
			}
			if last.T != "close" || last.Code != 4002 {
				t.Fatalf("slow client's stream ended after a %q frame with code %d (%s), want close 4002",
					last.T, last.Code, truncate(s.Err(), 200))
			}
			t.Logf("slow consumer disconnected after %d messages; deepest queue %d frames", published, deepest)
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
	broker := memory.New(memory.Config{Now: clock})
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
				await.Until(t, `ts.Manager().Attached() == 1`, func() bool { return ts.Manager().Attached() == 1 })
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
	acks, err := b.Send(ctx, sendFrame(1))
	if err != nil || len(acks) != 1 || acks[0].Err != nil || ts.seenCount(b.SID, 1) != 1 {
		t.Fatalf("send at the cap: %+v, %v", acks, err)
	}
}

// The cap's error is errors.Is-able and carries code 4000, and it can't be set on a broker
// the Server did not create.
func TestSessionCapError(t *testing.T) {
	ctx := context.Background()
	b := memory.New(memory.Config{MaxSessions: 1})
	defer b.Close()
	if err := b.CreateSession(ctx, "s1", time.Minute); err != nil {
		t.Fatal(err)
	}
	err := b.CreateSession(ctx, "s2", time.Minute)
	if !errors.Is(err, broker.ErrTooManySessions) || session.AsError(err).Code != session.CodeReconnect {
		t.Fatalf("second session: %v, want ErrTooManySessions with code 4000", err)
	}
	if httpx.Status(session.CodeReconnect) != http.StatusServiceUnavailable {
		t.Fatalf("code 4000 answers HTTP %d, want 503", httpx.Status(session.CodeReconnect))
	}
	if _, err := New(Config{Broker: b, MaxSessions: 5}); err == nil {
		t.Fatal("New accepted MaxSessions for a broker it doesn't own")
	}
}

// Every endpoint outside the transports answers through the same HTTP layer: a foreign
// Origin gets 403 before anything is read, and each error is the JSON {code, reason}
// with the status of its code (or of what went wrong with the request itself).
func TestAPIEndpointsShareOneHTTPLayer(t *testing.T) {
	ts := newTestServer(t, Config{APIKey: "k", MaxMessageBytes: 1024})
	foreign := []string{"Origin", "https://evil.example"}
	for _, tc := range []struct {
		name   string
		status int
		code   session.Code
		body   string
		extra  []string
	}{
		{"foreign origin", 403, session.CodeForbidden, `{"channel":"c","data":1}`, foreign},
		{"not JSON", 415, session.CodeBadRequest, `{"channel":"c","data":1}`, []string{"Content-Type", "text/plain"}},
		{"malformed", 400, session.CodeBadRequest, `{"channel":`, nil},
		{"too big", 413, session.CodeTooBig, `{"channel":"c","data":"` + strings.Repeat("x", 4096) + `"}`, nil},
		{"wrong key", 401, session.CodeUnauthorized, `{"channel":"c","data":1}`, []string{"Authorization", "Bearer nope"}},
	} {
		t.Run("publish "+tc.name, func(t *testing.T) {
			status, out := postPublish(t, ts.URL, "k", tc.body, tc.extra...)
			if status != tc.status || out["code"] != float64(tc.code) || out["reason"] == "" {
				t.Fatalf("answered %d %v, want %d with code %d", status, out, tc.status, tc.code)
			}
		})
	}
	if status, out := postPublish(t, ts.URL, "k", `{"channel":"c","data":1}`); status != 200 || out["position"] == nil {
		t.Fatalf("publish: %d %v", status, out)
	}

	for _, path := range []string{"/api/history?channel=c", "/events?channel=c"} {
		req, _ := http.NewRequest(http.MethodGet, ts.URL+path, nil)
		req.Header.Set(foreign[0], foreign[1])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e httpx.ErrorBody
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != 403 || e.Code != session.CodeForbidden || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("%s from a foreign origin: %d %+v", path, resp.StatusCode, e)
		}
	}
}
