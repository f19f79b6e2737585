package bridge

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferryrt/ferry/internal/await"
	"github.com/ferryrt/ferry/internal/fclient"
	"github.com/ferryrt/ferry/transport"
)

// poll performs one long-poll and tracks its frames into the client's cursor, unless
// lose is set (the answer never reached the client).
func poll(t *testing.T, c *fclient.Client, hello, lose bool) []fclient.Frame {
	t.Helper()
	frames, superseded, err := c.Poll(context.Background(), hello, 5*time.Second)
	if err != nil || superseded {
		t.Fatalf("poll: %v superseded=%v", err, superseded)
	}
	if !lose {
		for _, f := range frames {
			c.Track(f)
		}
	}
	return frames
}

func msgOffsets(frames []fclient.Frame) []uint64 {
	var offs []uint64
	for _, f := range frames {
		if f.T == "msg" {
			offs = append(offs, f.Off)
		}
	}
	return offs
}

// Between polls the attachment stays subscribed: what is published meanwhile waits in its
// queue, and a poll that continues from the last answer's cursor gets it without a new
// attachment or a history read. A poll whose previous answer was lost carries an older
// cursor: it attaches afresh and gets the same messages again from history.
func TestPollContinuesParkedAttachment(t *testing.T) {
	forEachIO(t, func(t *testing.T, io transport.IOMode) {
		reg := prometheus.NewRegistry()
		ts := newTestServer(t, Config{Metrics: reg, IO: io})
		attachments := func() float64 { return testutil.ToFloat64(ts.metrics.attachments) }
		c := ts.client(t)
		c.Subscribe("room:park", "")
		poll(t, c, true, false) // hello and sub
		if n := attachments(); n != 1 {
			t.Fatalf("%v attachments after the first poll", n)
		}
		if ts.Manager().Attached() != 0 {
			t.Fatal("a parked attachment counts as attached")
		}
		next := uint64(1)
		for range 5 {
			ts.publish(t, "room:park", next)
			ts.publish(t, "room:park", next+1)
			if offs := msgOffsets(poll(t, c, false, false)); len(offs) != 2 || offs[0] != next || offs[1] != next+1 {
				t.Fatalf("poll got offsets %v, want %d and %d", offs, next, next+1)
			}
			next += 2
		}
		if n := attachments(); n != 1 {
			t.Fatalf("%v attachments after polls that continued the first, want 1", n)
		}

		// The next answer is lost on the way: the client polls again from its old cursor.
		ts.publish(t, "room:park", next)
		if offs := msgOffsets(poll(t, c, false, true)); len(offs) != 1 || offs[0] != next {
			t.Fatalf("lost poll got %v", offs)
		}
		ts.publish(t, "room:park", next+1)
		if offs := msgOffsets(poll(t, c, false, false)); len(offs) != 2 || offs[0] != next || offs[1] != next+1 {
			t.Fatalf("poll after a lost answer got offsets %v, want %d and %d", offs, next, next+1)
		}
		if n := attachments(); n != 2 {
			t.Fatalf("%v attachments, want 2: the poll after the lost answer attaches afresh", n)
		}
	})
}

// A parked attachment that no poll continues is detached after PollLinger, and a newer
// attachment on another transport detaches it at once.
func TestParkedAttachmentEnds(t *testing.T) {
	forEachIO(t, func(t *testing.T, io transport.IOMode) {
		reg := prometheus.NewRegistry()
		ts := newTestServer(t, Config{Metrics: reg, PollLinger: 200 * time.Millisecond, IO: io})
		connections := func() float64 { return testutil.ToFloat64(ts.metrics.connections.WithLabelValues("longpoll")) }
		detached := func(code string) float64 {
			return testutil.ToFloat64(ts.metrics.disconnects.WithLabelValues("longpoll", code))
		}
		c := ts.client(t)
		c.Subscribe("room:linger", "")
		poll(t, c, true, false)
		if n := connections(); n != 1 {
			t.Fatalf("%v long-poll attachments while parked, want 1", n)
		}
		await.Until(t, `connections() == 0`, func() bool { return connections() == 0 })
		if n := detached("1000"); n != 1 {
			t.Fatalf("%v normal detaches after the linger, want 1", n)
		}
		// Continuing after the linger attaches afresh and still loses nothing.
		ts.publish(t, "room:linger", "a")
		if offs := msgOffsets(poll(t, c, false, false)); len(offs) != 1 || offs[0] != 1 {
			t.Fatalf("poll after the linger got %v", offs)
		}
		if n := connections(); n != 1 {
			t.Fatalf("%v long-poll attachments while parked, want 1", n)
		}
		c.NextAttachment()
		a := attach(t, c, "websocket")
		defer a.close()
		a.next(t, 5*time.Second) // hello
		if n := connections(); n != 0 {
			t.Fatalf("%v long-poll attachments after the switch to WebSocket, want 0", n)
		}
		if n := detached("4001"); n != 1 {
			t.Fatalf("%v superseded long-poll attachments, want 1", n)
		}
	})
}
