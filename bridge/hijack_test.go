package bridge

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferryrt/ferry/internal/fclient"
	"github.com/ferryrt/ferry/transport"
)

// WebSocket connections and SSE streams leave their handler once they run (the connection
// is hijacked), so the http.Server's timeouts, which a deployment sets for ordinary
// requests, must not reach them: a stream outlives ReadTimeout and WriteTimeout and keeps
// delivering.
func TestStreamsOutliveServerTimeouts(t *testing.T) {
	forEachIO(t, func(t *testing.T, io transport.IOMode) {
		srv, err := New(Config{Heartbeat: 100 * time.Millisecond, IO: io})
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
	})
}

// Shutdown waits for the hijacked streams: when it returns, every WebSocket and SSE
// stream has been sent its close frame and detached.
func TestShutdownWaitsForStreams(t *testing.T) {
	forEachIO(t, func(t *testing.T, io transport.IOMode) {
		reg := prometheus.NewRegistry()
		ts := newTestServer(t, Config{Metrics: reg, IO: io})
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
	})
}

// forEachIO runs test once per I/O mode (transport.IOMode), as a subtest named after it:
// the pooled I/O is never the only one that works (DESIGN invariant 11).
func forEachIO(t *testing.T, test func(t *testing.T, io transport.IOMode)) {
	for _, io := range []transport.IOMode{transport.IOPooled, transport.IOPlain} {
		t.Run(io.String(), func(t *testing.T) { test(t, io) })
	}
}

// Both I/O modes answer an SSE stream with the same headers and the same event bytes
// (DESIGN invariant 11): pooled, the stream is written on the hijacked connection by this
// package; plain, by net/http. Only the hello frame (session id, time) and the channel's
// epoch (each server has a broker of its own) differ, and are masked.
func TestSSEModesAnswerTheSameBytes(t *testing.T) {
	pooledOnly(t)
	epoch := regexp.MustCompile(`"ep":"([^"]+)"`)
	stream := func(io transport.IOMode) (*http.Response, string) {
		ts := newTestServer(t, Config{IO: io, Heartbeat: time.Minute})
		c := ts.client(t)
		c.Subscribe("room:diff", "")
		q := url.Values{"session": {c.Session}, "cursor": {c.Cursor()}}
		resp, err := http.Get(c.Base + "/sse?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		var out strings.Builder
		events := 0
		readEvents := func(n int) {
			for events < n {
				line, err := br.ReadString('\n')
				if err != nil {
					t.Fatalf("%s: after %q: %v", io, out.String(), err)
				}
				if strings.HasPrefix(line, `data: {"t":"hello"`) {
					line = "data: <hello>\n"
				}
				out.WriteString(line)
				if line == "\n" {
					events++
				}
			}
		}
		readEvents(3) // the retry hint, hello, sub
		ts.publish(t, "room:diff", map[string]any{"n": 1, "s": "a\nb"})
		ts.publish(t, "room:diff", "two")
		ts.publish(t, "room:diff", 3)
		readEvents(6)
		s := out.String()
		m := epoch.FindStringSubmatch(s)
		if m == nil {
			t.Fatalf("%s: no epoch in %q", io, s)
		}
		return resp, strings.ReplaceAll(s, m[1], "<epoch>")
	}
	pooled, pooledBody := stream(transport.IOPooled)
	plain, plainBody := stream(transport.IOPlain)
	if pooledBody != plainBody {
		t.Errorf("event streams differ:\npooled: %q\nplain:  %q", pooledBody, plainBody)
	}
	if pooled.StatusCode != plain.StatusCode {
		t.Errorf("status %d pooled, %d plain", pooled.StatusCode, plain.StatusCode)
	}
	for _, h := range []string{"Content-Type", "Cache-Control", "X-Accel-Buffering"} {
		if a, b := pooled.Header.Values(h), plain.Header.Values(h); !slices.Equal(a, b) {
			t.Errorf("%s: %q pooled, %q plain", h, a, b)
		}
	}
	// The two really took different paths: the hijacked stream ends with its connection.
	if !pooled.Close || plain.Close {
		t.Errorf("Connection: close pooled %v, plain %v; want the pooled stream hijacked and the plain one served by net/http", pooled.Close, plain.Close)
	}
}
