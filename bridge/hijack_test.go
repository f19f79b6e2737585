package bridge

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferryrt/ferry/internal/fclient"
)

// WebSocket connections and SSE streams leave their handler once they run (the connection
// is hijacked), so the http.Server's timeouts, which a deployment sets for ordinary
// requests, must not reach them: a stream outlives ReadTimeout and WriteTimeout and keeps
// delivering.
func TestStreamsOutliveServerTimeouts(t *testing.T) {
	srv, err := New(Config{Heartbeat: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	srv.Mount(mux)
	hs := httptest.NewUnstartedServer(mux)
	hs.Config.ReadTimeout = 300 * time.Millisecond
	hs.Config.WriteTimeout = 300 * time.Millisecond
	hs.Start()
	closeOnCleanup(t, srv, hs)
	ts := &testServer{Server: srv, URL: hs.URL + srv.Base(), http: hs, seen: map[string]int{}}
	for _, tr := range []string{"websocket", "sse"} {
		t.Run(tr, func(t *testing.T) {
			c := ts.client(t)
			c.Subscribe("room:t", "")
			a := attach(t, c, tr)
			defer a.close()
			a.next(t, 5*time.Second) // hello
			// Heartbeats every 100 ms: ten of them span more than three ReadTimeouts.
			pings := 0
			deadline := time.After(5 * time.Second)
			for pings < 10 {
				select {
				case f, ok := <-a.frames:
					if !ok || f.T == "close" {
						t.Fatalf("stream ended after %d pings: %+v", pings, f)
					}
					if f.T == "ping" {
						pings++
					}
				case <-deadline:
					t.Fatalf("%d pings in 5 s, want 10", pings)
				}
			}
			ts.publish(t, "room:t", "still here")
			f := a.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "msg" || f.T == "close" })
			if f.T != "msg" {
				t.Fatalf("after the timeouts: %+v", f)
			}
		})
	}
}

// Shutdown waits for the hijacked streams: when it returns, every WebSocket and SSE
// stream has been sent its close frame and detached.
func TestShutdownWaitsForStreams(t *testing.T) {
	reg := prometheus.NewRegistry()
	ts := newTestServer(t, Config{Metrics: reg})
	var as []*attachment
	for _, tr := range []string{"websocket", "sse", "websocket", "sse"} {
		c := ts.client(t)
		a := attach(t, c, tr)
		defer a.close()
		a.next(t, 5*time.Second) // hello
		as = append(as, a)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ts.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tr := range []string{"websocket", "sse"} {
		if n := testutil.ToFloat64(ts.metrics.connections.WithLabelValues(tr)); n != 0 {
			t.Errorf("%s: %v connections left after Shutdown", tr, n)
		}
		if n := testutil.ToFloat64(ts.metrics.disconnects.WithLabelValues(tr, "4003")); n != 2 {
			t.Errorf("%s: %v disconnects with 4003, want 2", tr, n)
		}
	}
	for i, a := range as {
		if f := a.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "close" }); f.Code != 4003 {
			t.Errorf("client %d: close %+v, want 4003", i, f)
		}
	}
}
