package bridge

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/ferryrt/ferry/bridge/broker"
	"github.com/ferryrt/ferry/bridge/broker/brokertest"
	"github.com/ferryrt/ferry/bridge/memory"
	"github.com/ferryrt/ferry/session"
)

// The same through the server: a client resuming a channel that was dropped while it was
// away continues from the tombstone, or gets a reset into the channel's new epoch; it
// never receives a message under a position it already holds.
func TestResumeAcrossChannelDrop(t *testing.T) {
	for _, tc := range []struct {
		name       string
		tombstones int
		reset      bool
	}{{"tombstone", 0, false}, {"forgotten", -1, true}} {
		t.Run(tc.name, func(t *testing.T) {
			b, clock := brokertest.NewSweptMemory(t, memory.Config{Tombstones: tc.tombstones})
			ts := newTestServer(t, Config{Broker: b})
			var held session.Position
			for i := range 3 {
				held, _ = ts.Publish(context.Background(), "room:d", i)
			}
			clock.Add(broker.DefaultHistoryTTL + time.Second)
			if n := b.Sweep(); n != 1 || b.Channels() != 0 {
				t.Fatalf("sweep dropped %d, %d channels left", n, b.Channels())
			}

			c := ts.client(t)
			c.Subscribe("room:d", held.String())
			frames, _, err := c.Poll(context.Background(), true, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range frames {
				c.Track(f)
			}
			want := session.Position{Epoch: held.Epoch, Offset: 3}
			if len(frames) != 2 || frames[1].Ch != "room:d" {
				t.Fatalf("first poll %+v, want hello and one frame for room:d", frames)
			}
			f := frames[1]
			switch {
			case tc.reset && (f.T != "reset" || f.Ep == held.Epoch || f.Off != 0):
				t.Fatalf("resume of a forgotten channel: %+v, want a reset into a new epoch", f)
			case !tc.reset && (f.T != "sub" || f.Ep != want.Epoch || f.Off != want.Offset):
				t.Fatalf("resume from a tombstone: %+v, want sub at %v", f, want)
			}

			pos, _ := ts.Publish(context.Background(), "room:d", "next")
			frames, _, err = c.Poll(context.Background(), false, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if len(frames) != 1 || frames[0].T != "msg" || frames[0].Ep != pos.Epoch || frames[0].Off != pos.Offset {
				t.Fatalf("after the resume: %+v, want the message at %v", frames, pos)
			}
			if pos.Epoch == held.Epoch && pos.Offset <= held.Offset {
				t.Fatalf("new message at %v reuses a position the client held (%v)", pos, held)
			}
		})
	}
}

// GET /api/history of a channel nobody used answers a stable position without creating
// the channel, and the channel's first message continues from it: a client that took a
// snapshot of the empty channel is not reset by its first message.
func TestHistoryOfAbsentChannelCreatesNothing(t *testing.T) {
	b, _ := brokertest.NewSweptMemory(t, memory.Config{})
	ts := newTestServer(t, Config{Broker: b})
	read := func() HistoryResponse {
		t.Helper()
		resp, err := http.Get(ts.URL + "/api/history?channel=never:used")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var h HistoryResponse
		if err := json.NewDecoder(resp.Body).Decode(&h); err != nil || resp.StatusCode != 200 {
			t.Fatalf("history: %d %v", resp.StatusCode, err)
		}
		return h
	}
	h1, h2 := read(), read()
	if h1.Epoch == "" || h1.Epoch != h2.Epoch || h1.Top != 0 || h2.Top != 0 {
		t.Fatalf("two reads of an absent channel: %+v and %+v", h1, h2)
	}
	if n := b.Channels(); n != 0 {
		t.Fatalf("history reads created %d channels", n)
	}
	pos, err := ts.Publish(context.Background(), "never:used", 1)
	if err != nil || pos != (session.Position{Epoch: h1.Epoch, Offset: 1}) {
		t.Fatalf("first message at %v (%v), want %s.1", pos, err, h1.Epoch)
	}
}
