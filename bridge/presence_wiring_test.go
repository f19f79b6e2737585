package bridge

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferryrt/ferry/bridge/broker/brokertest"
	"github.com/ferryrt/ferry/bridge/memory"
	"github.com/ferryrt/ferry/bridge/presence"
	"github.com/ferryrt/ferry/internal/fclient"
)

// Sessions subscribed to a presence channel are listed and announced; a watcher gets
// join and leave events on $presence:<channel>; unsubscribing leaves.
func TestPresenceThroughSessions(t *testing.T) {
	broker := memory.New(memory.Config{})
	p := presence.NewMemory(broker, presence.Config{})
	defer p.Close()
	ts := newTestServer(t, Config{Broker: broker, Presence: p, PresenceChannels: []string{"room:*"}})

	watcher := ts.client(t)
	watcher.Subscribe(presence.Channel("room:p"), "")
	w := attach(t, watcher, "sse")
	defer w.close()
	w.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "sub" })

	ann := ts.client(t)
	s, err := ann.WebSocket(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.WriteFrame(map[string]any{"t": "sub", "ch": "room:p"})
	bob := ts.client(t)
	bob.Subscribe("room:p", "")
	b := attach(t, bob, "longpoll")
	defer b.close()

	joined := map[string]bool{}
	for len(joined) < 2 {
		f := w.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "msg" })
		var ev presence.Event
		json.Unmarshal(f.D, &ev)
		if ev.Event != presence.Join || ev.Channel != "room:p" {
			t.Fatalf("event %+v", ev)
		}
		joined[ev.Session] = true
	}
	if !joined[ann.SID] || !joined[bob.SID] {
		t.Fatalf("joins %v", joined)
	}

	resp, err := http.Get(ts.URL + "/api/presence?channel=room:p&session=" + url.QueryEscape(bob.Session))
	if err != nil {
		t.Fatal(err)
	}
	var list PresenceResponse
	json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(list.Members) != 2 {
		t.Fatalf("presence list: %d %+v", resp.StatusCode, list)
	}

	s.WriteFrame(map[string]any{"t": "unsub", "ch": "room:p"})
	f := w.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "msg" })
	var ev presence.Event
	json.Unmarshal(f.D, &ev)
	if ev.Event != presence.Leave || ev.Session != ann.SID {
		t.Fatalf("after unsub: %+v", ev)
	}

	for _, q := range []string{"channel=other", "channel=room:p&session=forged"} {
		resp, err := http.Get(ts.URL + "/api/presence?" + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Errorf("%s: 200", q)
		}
	}
}

// countingPresence counts the Join calls that reach a presence store: every presence
// refresh of a session is one.
type countingPresence struct {
	Presence
	joins atomic.Int64
}

func (p *countingPresence) Join(ctx context.Context, m presence.Member, channels ...string) error {
	p.joins.Add(1)
	return p.Presence.Join(ctx, m, channels...)
}

// A long-polling member whose polls continue its parked attachment (poll-linger on, the
// default) stays present for as long as it polls, well past the presence TTL, with its
// presence refreshed at most once per heartbeat however often it polls; once it stops it
// leaves within the TTL plus a sweep.
func TestPresenceKeepsLongPollMember(t *testing.T) {
	const (
		ttl       = time.Second
		sweep     = 50 * time.Millisecond
		heartbeat = 250 * time.Millisecond
		hold      = 20 * time.Millisecond // many polls per heartbeat
		ch        = "room:lp"
	)
	broker := memory.New(memory.Config{})
	p := &countingPresence{Presence: presence.NewMemory(broker, presence.Config{TTL: ttl, SweepInterval: sweep})}
	defer p.Close()
	reg := prometheus.NewRegistry()
	ts := newTestServer(t, Config{Broker: broker, Presence: p, PresenceChannels: []string{"room:*"},
		Heartbeat: heartbeat, Metrics: reg})

	watcher := ts.client(t)
	watcher.Subscribe(presence.Channel(ch), "")
	w := attach(t, watcher, "sse")
	defer w.close()
	w.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "sub" })
	nextEvent := func(timeout time.Duration) presence.Event {
		t.Helper()
		f := w.waitFor(t, timeout, func(f fclient.Frame) bool { return f.T == "msg" })
		var ev presence.Event
		if err := json.Unmarshal(f.D, &ev); err != nil {
			t.Fatalf("presence event %s: %v", f.D, err)
		}
		return ev
	}

	bob := ts.client(t)
	bob.Subscribe(ch, "")
	bob.NextAttachment()
	pollOnce := func(hello bool) {
		t.Helper()
		frames, superseded, err := bob.Poll(context.Background(), hello, hold)
		if err != nil || superseded {
			t.Fatalf("poll: %v superseded=%v", err, superseded)
		}
		for _, f := range frames {
			bob.Track(f)
		}
	}
	listed := func() bool {
		ms, err := p.List(context.Background(), ch)
		return err == nil && len(ms) == 1 && ms[0].Session == bob.SID
	}

	pollOnce(true)
	if ev := nextEvent(5 * time.Second); ev.Event != presence.Join || ev.Session != bob.SID {
		t.Fatalf("first event %+v, want bob's join", ev)
	}
	joined := p.joins.Load()
	start := time.Now()
	var lastPoll time.Time
	polls := 0
	for time.Since(start) < 3*ttl {
		lastPoll = time.Now()
		pollOnce(false)
		polls++
		if !listed() {
			t.Fatalf("bob not listed after %v of polling (TTL %v): %s", time.Since(start), ttl, brokertest.MemberList(t, p, ch))
		}
	}
	polling := time.Since(start)
	// Every poll continued the first attachment: none of them refreshed presence by
	// attaching afresh.
	if n := testutil.ToFloat64(ts.metrics.attachments.WithLabelValues("longpoll")); n != 1 {
		t.Fatalf("%v long-poll attachments, want 1: the polls did not continue the parked attachment", n)
	}
	refreshes := p.joins.Load() - joined
	if most := int64(polling/heartbeat) + 1; refreshes > most {
		t.Fatalf("%d presence refreshes in %v of %d polls, want at most %d (one per heartbeat)", refreshes, polling, polls, most)
	}
	t.Logf("%d polls in %v, %d presence refreshes", polls, polling.Round(time.Millisecond), refreshes)

	// The presence channel is ordered: a marker published now comes after any event of
	// the polling time, which must hold no leave.
	ts.publish(t, presence.Channel(ch), presence.Event{Event: "mark", Channel: ch})
	for {
		ev := nextEvent(5 * time.Second)
		if ev.Event == "mark" {
			break
		}
		t.Fatalf("event %+v while bob was polling", ev)
	}

	// Bob stops polling: his last refresh was at his last poll at the latest, so he leaves
	// within a TTL and a sweep of it (slack for a loaded machine).
	bound := ttl + sweep + time.Second
	ev := nextEvent(time.Until(lastPoll.Add(bound)))
	if ev.Event != presence.Leave || ev.Session != bob.SID {
		t.Fatalf("event %+v, want bob's leave", ev)
	}
	if listed() {
		t.Fatal("bob still listed after his leave")
	}
	t.Logf("left %v after the last poll", time.Since(lastPoll).Round(time.Millisecond))
}
