package bridge

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ferryrt/ferry/internal/await"
	"github.com/ferryrt/ferry/internal/fclient"
	"github.com/ferryrt/ferry/transport"
)

// negotiateRaw negotiates on r and returns the credential.
func negotiateRaw(t testing.TB, r *rawConn) string {
	t.Helper()
	r.write(r.request("POST", "/negotiate", "{}"))
	return negotiated(t, r)
}

func negotiated(t testing.TB, r *rawConn) string {
	t.Helper()
	resp, b := r.read()
	var n struct{ Session string }
	if resp.StatusCode != 200 || json.Unmarshal(b, &n) != nil || n.Session == "" {
		t.Fatalf("negotiate: %d %s", resp.StatusCode, b)
	}
	if resp.ContentLength != int64(len(b)) || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("negotiate: Content-Length %d for %d bytes, Content-Type %q", resp.ContentLength, len(b), resp.Header.Get("Content-Type"))
	}
	return n.Session
}

// After a negotiation its keep-alive connection waits for the next request without a
// goroutine (parked on the poller, not in net/http), and whatever comes next on it is
// served: a poll (taken over), another negotiation, a pipelined pair.
func TestNegotiatedConnectionsWaitWithoutGoroutine(t *testing.T) {
	pooledOnly(t)
	needTakeOver(t)
	ts := newTestServer(t, Config{Limits: transport.Limits{NegotiateRate: 1e6}})
	const n = 100
	before := runtime.NumGoroutine()
	conns := make([]*rawConn, n)
	creds := make([]string, n)
	for i := range n {
		conns[i] = dialRaw(t, ts)
		creds[i] = negotiateRaw(t, conns[i])
	}
	// Held by net/http, each would keep its serve goroutine until the next request.
	await.Until(t, `runtime.NumGoroutine()-before <= n/10`, func() bool { return runtime.NumGoroutine()-before <= n/10 })
	for i, r := range conns {
		c := fclient.New(ts.URL)
		c.Session = creds[i]
		c.Subscribe("room:a", "")
		switch i % 3 {
		case 0: // a poll: its attachment answers hello
			frames := r.poll(c, "hello=1")
			if len(frames) == 0 || frames[0].T != "hello" {
				t.Fatalf("conn %d: first poll got %+v", i, frames)
			}
		case 1: // a negotiation resuming the session
			r.write(r.request("POST", "/negotiate", `{"session":"`+creds[i]+`"}`))
			negotiated(t, r)
		default: // two negotiations written at once
			r.write(r.request("POST", "/negotiate", "{}") + r.request("POST", "/negotiate", "{}"))
			negotiated(t, r)
			negotiated(t, r)
		}
	}
}

// A parked connection obeys the idle timeout, is closed on shutdown, and a client that
// closes it costs nothing.
func TestNegotiatedConnectionIdleAndShutdown(t *testing.T) {
	pooledOnly(t)
	needTakeOver(t)
	ts := newTestServer(t, Config{IdleTimeout: 300 * time.Millisecond})
	idle := dialRaw(t, ts)
	negotiateRaw(t, idle)
	if !idle.closed() {
		t.Fatal("a parked connection outlived the idle timeout")
	}
	left := dialRaw(t, ts)
	negotiateRaw(t, left)
	left.c.Close()

	ts2 := newTestServer(t, Config{})
	r := dialRaw(t, ts2)
	negotiateRaw(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ts2.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	ts2.Handoff().Close() // as http.Server.Shutdown does with its listeners
	if !r.closed() {
		t.Fatal("a parked connection stayed open through the shutdown")
	}
}

// Without the Handoff served (the goroutine-per-connection twin), the connection stays
// with net/http and serves the same requests the same way.
func TestNegotiatedConnectionWithoutHandoff(t *testing.T) {
	srv, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	srv.Mount(mux)
	hs := httptest.NewServer(mux) // Handoff not served
	closeOnCleanup(t, srv, hs)
	r := dialRaw(t, &testServer{Server: srv, URL: hs.URL + srv.Base()})
	cred := negotiateRaw(t, r)
	r.write(r.request("POST", "/negotiate", `{"session":"`+cred+`"}`) + r.request("POST", "/negotiate", "{}"))
	if got := negotiated(t, r); !strings.HasPrefix(got, "v1.") {
		t.Fatalf("credential %q", got)
	}
	negotiated(t, r)
}
