package session

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// fakeSource is a channel layer in memory: one channel, full control over what history
// returns and what is delivered live.
type fakeSource struct {
	mu      sync.Mutex
	epoch   string
	msgs    []*Message // offsets 1..n
	oldest  uint64     // first offset history still has
	subs    map[Deliverer]bool
	sinceN  int
	dropPub bool // publish without live delivery (a broker that lost fan-out)
}

func newFakeSource() *fakeSource {
	return &fakeSource{epoch: "e1", oldest: 1, subs: map[Deliverer]bool{}}
}

func (s *fakeSource) Subscribe(_ context.Context, _ string, d Deliverer) (func(), error) {
	s.mu.Lock()
	s.subs[d] = true
	s.mu.Unlock()
	return func() { s.mu.Lock(); delete(s.subs, d); s.mu.Unlock() }, nil
}

func (s *fakeSource) Since(_ context.Context, ch string, pos Position, limit int) ([]*Message, Position, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sinceN++
	top := Position{s.epoch, uint64(len(s.msgs))}
	if pos.IsZero() {
		return nil, top, true, nil
	}
	if pos.Epoch != s.epoch || pos.Offset+1 < s.oldest {
		return nil, top, false, nil
	}
	end := min(len(s.msgs), int(pos.Offset)+limit)
	return append([]*Message(nil), s.msgs[pos.Offset:end]...), top, true, nil
}

func (s *fakeSource) publish(n int) {
	for range n {
		s.mu.Lock()
		off := uint64(len(s.msgs) + 1)
		m := &Message{Channel: "c", Pos: Position{s.epoch, off}, Data: json.RawMessage(strconv.FormatUint(off, 10))}
		s.msgs = append(s.msgs, m)
		var subs []Deliverer
		if !s.dropPub {
			for d := range s.subs {
				subs = append(subs, d)
			}
		}
		s.mu.Unlock()
		for _, d := range subs {
			d.Deliver(m)
		}
	}
}

func testStream(src Source, queue int) *Stream {
	return NewStream(src, StreamConfig{QueueMessages: queue, QueueBytes: 1 << 20, BatchMessages: 1000, BatchBytes: 1 << 20, PageSize: queue / 2})
}

// drain reads frames until want msg frames arrived and checks they are offsets from..,
// consecutive; it returns the other frame types seen.
func drain(t *testing.T, c *Stream, from uint64, want int) []string {
	t.Helper()
	var other []string
	next := from
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for int(next-from) < want {
		out, err := c.Next(ctx, time.Time{})
		if err != nil {
			t.Fatalf("after offset %d: %v", next-1, err)
		}
		for _, o := range out {
			var f struct {
				T   string `json:"t"`
				Off uint64 `json:"off"`
			}
			json.Unmarshal(o.JSON, &f)
			if f.T != FrameMsg {
				other = append(other, f.T)
				continue
			}
			if f.Off != next {
				t.Fatalf("got offset %d, want %d", f.Off, next)
			}
			next++
		}
	}
	return other
}

func TestStreamResumesThenGoesLive(t *testing.T) {
	src := newFakeSource()
	src.publish(10)
	c := testStream(src, 64)
	c.Subscribe("c", Position{"e1", 4}, true)
	src.publish(3) // published between subscribe and the history read: must not be lost
	if other := drain(t, c, 5, 9); len(other) != 1 || other[0] != FrameSub {
		t.Fatalf("frames besides messages: %v", other)
	}
	src.publish(5)
	drain(t, c, 14, 5)
}

// A live message after a gap (a broker that lost fan-out) makes the attachment read the
// missing messages from history.
func TestStreamFillsGapFromHistory(t *testing.T) {
	src := newFakeSource()
	c := testStream(src, 64)
	c.Subscribe("c", Position{"e1", 0}, false)
	src.publish(2)
	drain(t, c, 1, 2)
	src.dropPub = true
	src.publish(5)
	src.dropPub = false
	src.publish(1)
	drain(t, c, 3, 6)
}

// A resume longer than the queue is read in pages, never overflowing the queue.
func TestStreamPagesLongHistory(t *testing.T) {
	src := newFakeSource()
	src.publish(500)
	c := testStream(src, 32)
	c.Subscribe("c", Position{"e1", 0}, false)
	drain(t, c, 1, 500)
	if c.Err() != nil {
		t.Fatalf("closed: %v", c.Err())
	}
	if src.sinceN < 500/16 {
		t.Fatalf("history read in %d steps; pages must fit the queue", src.sinceN)
	}
}

func TestStreamResetOnNewEpoch(t *testing.T) {
	src := newFakeSource()
	src.publish(3)
	c := testStream(src, 64)
	c.Subscribe("c", Position{"e1", 3}, false)
	// History is lost: a new epoch starts at 1.
	src.mu.Lock()
	src.epoch, src.msgs = "e2", nil
	src.mu.Unlock()
	src.publish(2)
	// The reset names the new epoch's latest position; the stream continues after it
	// (what came before is the app's snapshot to reload).
	src.publish(0)
	out, err := c.Next(context.Background(), time.Time{})
	if err != nil || len(out) != 1 || string(out[0].JSON) != `{"t":"reset","ch":"c","ep":"e2","off":2,"reason":"history does not cover the position"}` {
		t.Fatalf("got %q %v, want a reset", jsonOf(out), err)
	}
	src.publish(2)
	drain(t, c, 3, 2)
}

func TestStreamSlowConsumer(t *testing.T) {
	src := newFakeSource()
	c := testStream(src, 16)
	var closed *Error
	c.OnClose = func(e *Error) { closed = e }
	c.Subscribe("c", Position{}, false)
	if out, _ := c.Next(context.Background(), time.Time{}); len(out) != 1 {
		t.Fatalf("want the sub frame, got %q", jsonOf(out))
	}
	src.publish(17)
	if c.Err() != ErrSlowConsumer || closed != ErrSlowConsumer {
		t.Fatalf("err %v, OnClose %v", c.Err(), closed)
	}
	out, err := c.Next(context.Background(), time.Time{})
	if err != nil || len(out) != 1 || string(out[0].JSON) != `{"t":"close","code":4002,"reason":"slow consumer: outbound queue full"}` {
		t.Fatalf("after close: %q %v", jsonOf(out), err)
	}
	if _, err := c.Next(context.Background(), time.Time{}); err != ErrSlowConsumer {
		t.Fatalf("second Next: %v", err)
	}
	src.mu.Lock()
	n := len(src.subs)
	src.mu.Unlock()
	if n != 0 {
		t.Fatal("closed attachment still subscribed")
	}
}

// Heartbeats come every interval with a sequence and the server time; a long-poll hold
// ends with a ping.
func TestStreamHeartbeatAndHold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewStream(newFakeSource(), StreamConfig{QueueMessages: 16, QueueBytes: 1 << 20, BatchMessages: 10, BatchBytes: 1 << 20, Heartbeat: 15 * time.Second})
		start := time.Now()
		for i := 1; i <= 3; i++ {
			out, err := c.Next(context.Background(), time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			var f ServerFrame
			json.Unmarshal(out[0].JSON, &f)
			if f.T != FramePing || f.Seq != uint64(i) || time.Since(start) != time.Duration(i)*15*time.Second || f.TS != time.Now().UnixMilli() {
				t.Fatalf("ping %d: %+v after %v", i, f, time.Since(start))
			}
		}
		p := NewStream(newFakeSource(), StreamConfig{QueueMessages: 16, QueueBytes: 1 << 20, BatchMessages: 10, BatchBytes: 1 << 20})
		start = time.Now()
		out, _ := p.Next(context.Background(), start.Add(25*time.Second))
		if len(out) != 1 || time.Since(start) != 25*time.Second {
			t.Fatalf("hold returned %q after %v", jsonOf(out), time.Since(start))
		}
	})
}

// jsonOf returns the frames of out as strings, for failure messages.
func jsonOf(out []Outgoing) []string {
	s := make([]string, len(out))
	for i, o := range out {
		s[i] = string(o.JSON)
	}
	return s
}

// "From now" is the moment of Subscribe: a message published before the history read
// but after Subscribe is delivered.
func TestStreamFromNowIncludesMessagesAfterSubscribe(t *testing.T) {
	src := newFakeSource()
	src.publish(3)
	c := testStream(src, 64)
	c.Subscribe("c", Position{}, true)
	src.publish(2) // offsets 4 and 5, before the writer runs the history read
	out, err := c.Next(context.Background(), time.Time{})
	if err != nil || len(out) != 3 || string(out[0].JSON) != `{"t":"sub","ch":"c","ep":"e1","off":3}` {
		t.Fatalf("got %q %v", jsonOf(out), err)
	}
}

// A stream busier than the heartbeat still carries a ping every interval.
func TestStreamHeartbeatOnBusyStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource()
		c := NewStream(src, StreamConfig{QueueMessages: 64, QueueBytes: 1 << 20, BatchMessages: 10, BatchBytes: 1 << 20, PageSize: 32, Heartbeat: 15 * time.Second})
		c.Subscribe("c", Position{}, false)
		if out, _ := c.Next(context.Background(), time.Time{}); len(out) != 1 { // the sub frame, at 0 s
			t.Fatalf("got %q", jsonOf(out))
		}
		pings := 0
		for range 60 { // a message every second for a minute
			time.Sleep(time.Second)
			src.publish(1)
			for {
				out, err := c.Next(context.Background(), time.Time{})
				if err != nil {
					t.Fatal(err)
				}
				got := false
				for _, o := range out {
					if isPing(o) {
						pings++
					}
					got = got || o.Msg != nil
				}
				if got {
					break
				}
			}
		}
		if pings != 4 { // at 15, 30, 45 and 60 s
			t.Fatalf("%d pings in a busy minute, want 4", pings)
		}
	})
}

func isPing(o Outgoing) bool { return len(o.JSON) > 10 && string(o.JSON[:11]) == `{"t":"ping"` }

// A transport without a waiting goroutine: OnWake tells it there is something, TryNext
// hands it over without blocking (history first, then live), then says nothing is left;
// after Close it returns the close frame once, then the reason.
func TestStreamWakeAndTryNext(t *testing.T) {
	src := newFakeSource()
	src.publish(3)
	c := testStream(src, 64)
	var mu sync.Mutex
	wakes := 0
	c.OnWake = func() { mu.Lock(); wakes++; mu.Unlock() }
	woken := func() int { mu.Lock(); defer mu.Unlock(); n := wakes; wakes = 0; return n }

	if out, err := c.TryNext(context.Background()); out != nil || err != nil {
		t.Fatalf("before anything: %v %v", out, err)
	}
	c.Subscribe("c", Position{"e1", 1}, false) // resume: offsets 2 and 3 from history
	if woken() == 0 {
		t.Fatal("subscribe with a resume did not wake the writer")
	}
	var offs []uint64
	take := func() {
		for {
			out, err := c.TryNext(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if out == nil {
				return
			}
			for _, o := range out {
				var f struct {
					T   string `json:"t"`
					Off uint64 `json:"off"`
				}
				json.Unmarshal(o.JSON, &f)
				if f.T == FrameMsg {
					offs = append(offs, f.Off)
				}
			}
		}
	}
	take()
	src.publish(2)
	if woken() == 0 {
		t.Fatal("a live message did not wake the writer")
	}
	take()
	if want := []uint64{2, 3, 4, 5}; len(offs) != len(want) || offs[0] != 2 || offs[3] != 5 {
		t.Fatalf("offsets %v, want %v", offs, want)
	}
	c.Ping()
	if out, _ := c.TryNext(context.Background()); len(out) != 1 || !strings.Contains(string(out[0].JSON), `"t":"ping"`) {
		t.Fatalf("after Ping: %+v", out)
	}
	// The writer that took the ping is still draining: more frames don't wake another.
	woken()
	c.Ping()
	if n := woken(); n != 0 {
		t.Fatalf("%d wakes while a writer drains, want none", n)
	}
	if out, _ := c.TryNext(context.Background()); len(out) != 1 {
		t.Fatalf("second ping: %+v", out)
	}
	if out, err := c.TryNext(context.Background()); out != nil || err != nil {
		t.Fatalf("after the pings: %v %v", out, err)
	}
	// Idle again: the next frame wakes a writer, once.
	c.Ping()
	c.Ping()
	if n := woken(); n != 1 {
		t.Fatalf("%d wakes for two frames to an idle writer, want 1", n)
	}
	take()
	c.Close(ErrNormal)
	if woken() == 0 {
		t.Fatal("Close did not wake the writer")
	}
	out, err := c.TryNext(context.Background())
	if err != nil || len(out) != 1 || !strings.Contains(string(out[0].JSON), `"t":"close"`) {
		t.Fatalf("after Close: %+v %v", out, err)
	}
	if _, err := c.TryNext(context.Background()); err == nil {
		t.Fatal("TryNext after the close frame returned no error")
	}
}

// PingLater queues a ping without waking an idle writer: it goes out with the next frame
// that wakes one, in the same batch, or when Flush wakes the writer. Flush with nothing
// queued wakes nothing.
func TestStreamPingLaterRidesTheNextFrame(t *testing.T) {
	src := newFakeSource()
	c := testStream(src, 64)
	wakes := 0
	c.OnWake = func() { wakes++ } // under the Stream's lock, on this goroutine
	c.Subscribe("c", Position{}, false)
	for { // what subscribing queued (a sub frame from the recovery)
		out, err := c.TryNext(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if out == nil {
			break
		}
	}
	wakes = 0

	c.PingLater()
	if wakes != 0 {
		t.Fatalf("PingLater woke the writer %d times, want none", wakes)
	}
	src.publish(1)
	out, err := c.TryNext(context.Background())
	if wakes != 1 || err != nil || len(out) != 2 || !isPing(out[0]) || out[1].Kind != KindMsg {
		t.Fatalf("after a message: %d wakes, batch %v %v; want one wake and the ping with the message", wakes, out, err)
	}
	if out, _ := c.TryNext(context.Background()); out != nil {
		t.Fatalf("left after the batch: %v", out)
	}

	wakes = 0
	c.Flush()
	if wakes != 0 {
		t.Fatalf("Flush of an empty queue woke the writer %d times", wakes)
	}
	c.PingLater()
	c.Flush()
	out, _ = c.TryNext(context.Background())
	if wakes != 1 || len(out) != 1 || !isPing(out[0]) {
		t.Fatalf("Flush after PingLater: %d wakes, batch %v; want one wake and the ping", wakes, out)
	}
	c.Close(ErrNormal)
	c.PingLater() // after the close: nothing queued, nothing woken beyond the close
	if out, _ := c.TryNext(context.Background()); len(out) != 1 || out[0].Kind != KindClose {
		t.Fatalf("after Close and a ping: %v, want the close frame alone", out)
	}
}
