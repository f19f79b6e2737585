package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// events decodes the presence events delivered on channel's presence channel, as
// "join s1" and "leave s2".
func (in *inbox) events(t testing.TB, channel string) []string {
	t.Helper()
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []string
	for _, m := range in.msgs {
		if m.Channel != PresenceChannel(channel) {
			continue
		}
		var ev PresenceEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil || ev.Channel != channel {
			t.Fatalf("presence event %s: %v", m.Data, err)
		}
		out = append(out, ev.Event+" "+ev.Session)
	}
	return out
}

func memberList(t testing.TB, p Presence, channel string) string {
	t.Helper()
	ms, err := p.List(context.Background(), channel)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(ms)
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestMemoryPresence(t *testing.T) {
	mb := NewMemoryBroker(MemoryConfig{})
	defer mb.Close()
	in := newInbox()
	mb.Start(in.deliver, nil)
	clock := &fakeClock{now: time.Now()}
	p := NewMemoryPresence(mb, PresenceConfig{TTL: 10 * time.Second, SweepInterval: time.Hour, Now: clock.Now})
	defer p.Close()
	ctx := context.Background()
	s1, s2 := PresenceMember{Session: "s1", User: "ann"}, PresenceMember{Session: "s2"}

	if err := p.Join(ctx, PresenceMember{}, "room"); err == nil {
		t.Fatal("joined without a session")
	}
	p.Join(ctx, s1, "room")
	p.Join(ctx, s1, "room") // a refresh: no event
	p.Join(ctx, s2, "room", "other")
	if got := memberList(t, p, "room"); got != "[{s1 ann} {s2 }]" {
		t.Fatalf("room: %s", got)
	}
	p.Leave(ctx, s2, "room")
	p.Leave(ctx, s2, "room") // not there any more: no event
	if got := fmt.Sprint(in.events(t, "room")); got != "[join s1 join s2 leave s2]" {
		t.Fatalf("events: %s", got)
	}

	clock.Add(11 * time.Second) // past the TTL: gone for List at once, announced by Sweep
	if got := memberList(t, p, "room"); got != "[]" {
		t.Fatalf("room after the TTL: %s", got)
	}
	if n, err := p.Sweep(ctx); n != 2 || err != nil {
		t.Fatalf("sweep: %d %v", n, err)
	}
	if got := fmt.Sprint(in.events(t, "room"), in.events(t, "other")); got != "[join s1 join s2 leave s2 leave s1] [join s2 leave s2]" {
		t.Fatalf("events: %s", got)
	}
}

// Presence is shared by the nodes: members joined on either are listed on both, every
// change is announced once, and the members of a node that dies without a word leave
// within the TTL plus a sweep, announced by a node still alive.
func TestRedisPresenceAcrossNodes(t *testing.T) {
	mr := miniredis.RunT(t)
	t0 := time.Now()
	mr.SetTime(t0) // presence runs on Redis's clock
	a := newRedisBroker(t, mr, RedisConfig{NoPublishStream: true})
	b := newRedisBroker(t, mr, RedisConfig{NoPublishStream: true})
	watcher := newRedisBroker(t, mr, RedisConfig{NoPublishStream: true})
	startBroker(t, a)
	startBroker(t, b)
	in := startBroker(t, watcher)
	ctx := context.Background()
	watcher.Subscribe(ctx, PresenceChannel("room"))

	cfg := PresenceConfig{TTL: 30 * time.Second, SweepInterval: 20 * time.Millisecond, Logger: testLogger(t)}
	pa := NewRedisPresence(a, cfg)
	defer pa.Close()
	pb := NewRedisPresence(b, cfg)
	s1, s2 := PresenceMember{Session: "s1", User: "ann"}, PresenceMember{Session: "s2", User: "bob"}

	if err := pa.Join(ctx, s1, "room"); err != nil {
		t.Fatal(err)
	}
	if err := pb.Join(ctx, s2, "room", "other"); err != nil {
		t.Fatal(err)
	}
	pa.Join(ctx, s1, "room") // refresh: no event
	for _, p := range []Presence{pa, pb} {
		if got := memberList(t, p, "room"); got != "[{s1 ann} {s2 bob}]" {
			t.Fatalf("room: %s", got)
		}
	}
	in.waitFor(t, "two joins", func() bool { return len(in.events(t, "room")) >= 2 })

	// Node b dies: no Leave, its presence stops refreshing. Node a keeps refreshing s1.
	pb.Close()
	b.Close()
	mr.SetTime(t0.Add(20 * time.Second))
	pa.Join(ctx, s1, "room")
	mr.SetTime(t0.Add(40 * time.Second)) // s2 expired at 30 s, s1 lives until 50 s
	if got := memberList(t, pa, "room"); got != "[{s1 ann}]" {
		t.Fatalf("room after b died: %s", got)
	}
	in.waitFor(t, "s2 to leave", func() bool { return len(in.events(t, "room")) >= 3 })
	if got := memberList(t, pa, "other"); got != "[]" {
		t.Fatalf("other after b died: %s", got)
	}

	pa.Leave(ctx, s1, "room")
	pa.Leave(ctx, s1, "room") // once only
	if got := memberList(t, pa, "room"); got != "[]" {
		t.Fatalf("room after s1 left: %s", got)
	}
	in.waitFor(t, "s1 to leave", func() bool { return len(in.events(t, "room")) >= 4 })
	if got := fmt.Sprint(in.events(t, "room")); got != "[join s1 join s2 leave s2 leave s1]" {
		t.Fatalf("events: %s", got)
	}
	eventually(t, "the sweep index to empty", func() bool { return !mr.Exists(a.keys.presenceDue()) })

	// A member that expired and comes back before a sweep is announced again.
	pa.Close()
	cfg.SweepInterval = time.Hour
	pc := NewRedisPresence(a, cfg)
	defer pc.Close()
	pc.Join(ctx, s1, "room")
	mr.SetTime(t0.Add(100 * time.Second))
	pc.Join(ctx, s1, "room")
	in.waitFor(t, "the rejoin", func() bool { return len(in.events(t, "room")) >= 6 })
	if got := fmt.Sprint(in.events(t, "room")[4:]); got != "[join s1 join s1]" {
		t.Fatalf("events: %s", got)
	}
}

func TestPresenceHandler(t *testing.T) {
	p := NewMemoryPresence(nil, PresenceConfig{})
	defer p.Close()
	p.Join(context.Background(), PresenceMember{Session: "s1", User: "ann"}, "room:a")
	get := func(h http.Handler, key, channel string) (int, string) {
		r := httptest.NewRequest(http.MethodGet, "/ferry/api/presence?channel="+channel, nil)
		if key != "" {
			r.Header.Set("Authorization", "Bearer "+key)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code, w.Body.String()
	}
	h := NewPresenceHandler(p, "k")
	for _, c := range []struct {
		h       http.Handler
		key, ch string
		status  int
		body    string
	}{
		{NewPresenceHandler(p, ""), "k", "room:a", http.StatusForbidden, ""},
		{h, "", "room:a", http.StatusUnauthorized, ""},
		{h, "wrong", "room:a", http.StatusUnauthorized, ""},
		{h, "k", "bad%20name", http.StatusBadRequest, ""},
		{h, "k", "room:a", http.StatusOK, `{"channel":"room:a","members":[{"session":"s1","user":"ann"}]}` + "\n"},
		{h, "k", "room:b", http.StatusOK, `{"channel":"room:b","members":[]}` + "\n"},
	} {
		status, body := get(c.h, c.key, c.ch)
		if status != c.status || (c.body != "" && body != c.body) {
			t.Errorf("key %q channel %q: %d %s", c.key, c.ch, status, body)
		}
	}
}
