package bridge

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/ferryrt/ferry/internal/fclient"
)

// Sessions subscribed to a presence channel are listed and announced; a watcher gets
// join and leave events on $presence:<channel>; unsubscribing leaves.
func TestPresenceThroughSessions(t *testing.T) {
	broker := NewMemoryBroker(MemoryConfig{})
	p := NewMemoryPresence(broker, PresenceConfig{})
	defer p.Close()
	ts := newTestServer(t, Config{Broker: broker, Presence: p, PresenceChannels: []string{"room:*"}})

	watcher := ts.client(t)
	watcher.Subscribe(PresenceChannel("room:p"), "")
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
		var ev PresenceEvent
		json.Unmarshal(f.D, &ev)
		if ev.Event != PresenceJoin || ev.Channel != "room:p" {
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
	var ev PresenceEvent
	json.Unmarshal(f.D, &ev)
	if ev.Event != PresenceLeave || ev.Session != ann.SID {
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
