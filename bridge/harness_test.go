package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferryrt/ferry/internal/await"
	"github.com/ferryrt/ferry/internal/fclient"
	"github.com/ferryrt/ferry/transport"
)

var transports = []string{"websocket", "sse", "longpoll"}

// testServer runs a Server on an httptest server and records upstream messages.
type testServer struct {
	*Server
	URL  string // base URL, e.g. http://127.0.0.1:1234/ferry
	http *httptest.Server

	mu   sync.Mutex
	seen map[string]int // "sid/seq" -> times the handler saw it
}

// testIOPlain reports whether this run serves the test servers with plain I/O
// (FERRY_TEST_IO=plain; scripts/test.sh runs the package a second time so): every test
// that does not choose a mode itself then runs on the twin of the pooled I/O.
var testIOPlain = os.Getenv("FERRY_TEST_IO") == "plain"

// pooledOnly skips a test of the pooled I/O itself (a take-over, a connection without a
// goroutine) in the plain run; the pooled run of the same package runs it.
func pooledOnly(t testing.TB) {
	t.Helper()
	if testIOPlain {
		t.Skip("tests the pooled I/O, which the run without FERRY_TEST_IO=plain covers")
	}
}

func newTestServer(t testing.TB, cfg Config) *testServer {
	t.Helper()
	return newTestServerWith(t, cfg, nil)
}

// postPublish sends body to POST <base>/api/publish with the API key and the extra
// headers, and returns the status and the decoded JSON answer.
func postPublish(t testing.TB, base, apiKey, body string, extra ...string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/api/publish", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(extra); i += 2 {
		req.Header.Set(extra[i], extra[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// closeOnCleanup drains srv (5 s at most) and closes hs with its connections when the
// test ends.
func closeOnCleanup(t testing.TB, srv *Server, hs *httptest.Server) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		hs.CloseClientConnections()
		hs.Close()
	})
}

// newTestServerWith is newTestServer with setup applied to the http.Server before it
// starts.
func newTestServerWith(t testing.TB, cfg Config, setup func(*http.Server)) *testServer {
	t.Helper()
	ts := &testServer{seen: map[string]int{}}
	if cfg.OnMessage == nil {
		cfg.OnMessage = func(_ context.Context, m Upstream) error {
			ts.mu.Lock()
			ts.seen[fmt.Sprintf("%s/%d", m.Session, m.Seq)]++
			ts.mu.Unlock()
			return nil
		}
	}
	if cfg.IO == transport.IOPooled && testIOPlain {
		cfg.IO = transport.IOPlain
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts.Server = srv
	mux := http.NewServeMux()
	srv.Mount(mux)
	ts.http = httptest.NewUnstartedServer(mux)
	if setup != nil {
		setup(ts.http.Config)
	}
	ts.http.Start()
	ts.URL = ts.http.URL + srv.Base()
	// As cmd/ferry does: long-polling keep-alive connections are taken over, and come back
	// to the server for anything else.
	handoff := make(chan struct{})
	go func() {
		ts.http.Config.Serve(srv.Handoff())
		close(handoff)
	}()
	// Polls are taken over only once the listener is served: tests that expect it must
	// not race its first Accept.
	await.Until(t, "the take-over of poll connections serving", srv.handoff.Serving)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		srv.Handoff().Close()
		<-handoff
		ts.http.CloseClientConnections()
		ts.http.Close()
	})
	return ts
}

func (ts *testServer) seenCount(sid string, seq uint64) int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.seen[fmt.Sprintf("%s/%d", sid, seq)]
}

func (ts *testServer) client(t testing.TB) *fclient.Client {
	t.Helper()
	c := fclient.New(ts.URL)
	if err := c.Negotiate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return c
}

func (ts *testServer) publish(t testing.TB, ch string, v any) {
	t.Helper()
	if _, err := ts.Publish(context.Background(), ch, v); err != nil {
		t.Error(err)
	}
}

// attachment is one downstream of a test client on some transport, delivering frames
// (already tracked into the client's cursor) on a channel.
type attachment struct {
	frames chan fclient.Frame
	stop   context.CancelFunc
	done   chan error
}

// attach starts a downstream on tr. For long-polling it polls in a loop, first with
// hello=1, like a real client. Frames arrive on the returned attachment until stop.
func attach(t *testing.T, c *fclient.Client, tr string) *attachment {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a := &attachment{frames: make(chan fclient.Frame, 4096), stop: cancel, done: make(chan error, 2)}
	// The cursor moves only for frames handed to the test: a frame dropped because the
	// attachment was stopped must come again on the next one.
	deliver := func(f fclient.Frame) bool {
		select {
		case a.frames <- f:
			c.Track(f)
			return true
		case <-ctx.Done():
			return false
		}
	}
	var s *fclient.Stream
	var err error
	c.NextAttachment()
	switch tr {
	case "websocket":
		s, err = c.WebSocket(ctx)
	case "sse":
		s, err = c.SSE(ctx, "")
	case "longpoll":
		go func() {
			defer close(a.frames)
			hello := true
			for ctx.Err() == nil {
				frames, superseded, err := c.Poll(ctx, hello, 2*time.Second)
				if err != nil || superseded {
					a.done <- err
					return
				}
				hello = false
				for _, f := range frames {
					if !deliver(f) {
						a.done <- nil
						return
					}
					if f.T == "close" {
						a.done <- nil
						return
					}
				}
			}
			a.done <- nil
		}()
		return a
	}
	if err != nil {
		cancel()
		t.Fatalf("attach %s: %v", tr, err)
	}
	go func() {
		defer close(a.frames)
		for f := range s.Frames {
			if !deliver(f) {
				break
			}
		}
		s.Close()
		a.done <- s.Err()
		a.done <- s.Err() // once for next's report, once for close
	}()
	return a
}

// close stops the attachment and waits for its goroutine.
func (a *attachment) close() {
	a.stop()
	for range a.frames {
	}
	<-a.done
}

// next returns the next frame that is not a ping, or fails the test after timeout.
func (a *attachment) next(t *testing.T, timeout time.Duration) fclient.Frame {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case f, ok := <-a.frames:
			if !ok {
				t.Fatalf("attachment ended while waiting for a frame: %v", <-a.done)
			}
			if f.T != "ping" {
				return f
			}
		case <-deadline:
			t.Fatalf("no frame within %v", timeout)
		}
	}
}

// waitFor reads frames until one satisfies ok.
func (a *attachment) waitFor(t *testing.T, timeout time.Duration, ok func(fclient.Frame) bool) fclient.Frame {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		f := a.next(t, time.Until(deadline))
		if ok(f) {
			return f
		}
	}
}

// sequence checks the msg frames of one channel: consecutive offsets in one epoch and
// payloads n, n+1, ... as the publisher numbered them.
type sequence struct {
	epoch   string
	lastOff uint64
	next    int
}

func (s *sequence) add(t *testing.T, f fclient.Frame) {
	t.Helper()
	var n int
	if err := json.Unmarshal(f.D, &n); err != nil {
		t.Fatalf("payload %s: %v", f.D, err)
	}
	if s.epoch != "" && (f.Ep != s.epoch || f.Off != s.lastOff+1) {
		t.Fatalf("position %s.%d after %s.%d: gap or duplicate", f.Ep, f.Off, s.epoch, s.lastOff)
	}
	if n != s.next {
		t.Fatalf("payload %d, want %d", n, s.next)
	}
	s.epoch, s.lastOff, s.next = f.Ep, f.Off, n+1
}
