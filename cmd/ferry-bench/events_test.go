package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ferryrt/ferry/bridge"
)

func TestSSEReader(t *testing.T) {
	stream := "retry: 2000\n: ferry events\n\n" +
		"id: a=e.1\n\n" + // an id alone dispatches nothing
		"id: a=e.2\r\nevent: a\r\ndata: {\"x\":1}\r\n\r\n" +
		": ping 5\n\n" +
		"data:one\ndata: two\n\n" + // no event name: "message"; data lines joined
		"event: ignored\n\n" + // no data: nothing, and the name does not carry over
		"data: {}\n\n" +
		"event: close\ndata: {\"code\":4006}\n\n"
	r := sseReader{br: bufio.NewReaderSize(strings.NewReader(stream), 16)}
	want := []string{"retry 2000", "a {\"x\":1} a=e.2", "message one\ntwo a=e.2", "message {} a=e.2", "close {\"code\":4006} a=e.2"}
	for i, w := range want {
		ev, err := r.next()
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		got := fmt.Sprintf("%s %s %s", ev.name, ev.data, ev.id)
		if ev.retry {
			got = "retry " + string(ev.data)
		}
		if got != w {
			t.Errorf("event %d = %q, want %q", i, got, w)
		}
	}
	if _, err := r.next(); err != io.EOF {
		t.Fatalf("after the last event: %v, want EOF", err)
	}
}

// TestEventsReaders runs the dashboard readers against the real server, with the memory
// sampled through the run.
func TestEventsReaders(t *testing.T) {
	srv, err := bridge.New(bridge.Config{APIKey: "k", Heartbeat: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	srv.Mount(mux)
	ts := httptest.NewServer(mux)
	defer ts.Close()
	defer srv.Shutdown(context.Background())
	o := smallRun(t, ts.URL, "ferry", "events", 0)
	o.rssEvery = 20 * time.Millisecond
	res := checkRun(t, o)
	if res.RSS == nil || len(res.RSS.Samples) < 3 || res.RSS.Max < res.RSS.Last || res.RSS.Min > res.RSS.First || res.RSS.Min <= 0 {
		t.Fatalf("memory trace %+v", res.RSS)
	}
	if res.Label != "ferry/events" {
		t.Errorf("label %q", res.Label)
	}
}

// fakeEvents serves /events with an event stream that delivers one message and then
// ends with a close event, or answers status.
type fakeEvents struct {
	status int
	events string
}

func (f fakeEvents) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/ferry/events" || r.URL.Query().Get("channel") != "bench" || r.Header.Get("Accept") != "text/event-stream" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	if f.status != 0 {
		http.Error(w, "no", f.status)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	io.WriteString(w, f.events)
}

func TestEventsClientEnds(t *testing.T) {
	payload := string(appendPayload(nil, phaseRate, seqBase(phaseRate)+1, time.Now().UnixNano(), 3))
	for _, c := range []struct {
		name, events string
		status       int
		connectErr   string
		readErr      string
		delivered    int64
	}{
		{name: "refused", status: http.StatusForbidden, connectErr: "HTTP 403"},
		{name: "closed before the hint", events: "event: close\ndata: {\"code\":4003}\n\n", connectErr: "closed by server"},
		{name: "closed", events: "retry: 2000\n\nid: bench=e.1\n\n: ping 1\n\nid: bench=e.2\nevent: bench\ndata: " + payload + "\n\nevent: close\ndata: {\"code\":4006,\"reason\":\"token expired\"}\n\n",
			readErr: "closed by server: {\"code\":4006", delivered: 1},
		{name: "reset", events: "retry: 2000\n\nevent: reset\ndata: {\"channel\":\"bench\"}\n\nevent: bench\ndata: " + payload + "\n\n",
			readErr: "EOF", delivered: 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			ts := httptest.NewServer(fakeEvents{status: c.status, events: c.events})
			defer ts.Close()
			o := smallRun(t, ts.URL, "ferry", "events", 0)
			e, err := newEnv(o)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cl := e.newClient(0, false)
			defer cl.close()
			err = cl.connect(ctx)
			if c.connectErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.connectErr) {
					t.Fatalf("connect: %v, want %q", err, c.connectErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			st := newStats()
			err = cl.read(ctx, st)
			if err == nil || !strings.Contains(err.Error(), c.readErr) {
				t.Fatalf("read: %v, want %q", err, c.readErr)
			}
			if got := st.phases[phaseRate].delivered.Load(); got != c.delivered {
				t.Errorf("delivered %d, want %d", got, c.delivered)
			}
			if c.name == "reset" && st.errorCounts()["events reset"] != 1 {
				t.Errorf("reset not reported: %v", st.errorCounts())
			}
		})
	}
}
