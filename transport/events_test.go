package transport_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferryrt/ferry/internal/await"
	"github.com/ferryrt/ferry/session"
	"github.com/ferryrt/ferry/transport"
)

// forEachIO runs test once per I/O mode, as a subtest named after it: the pooled I/O is
// never the only one that works (DESIGN invariant 11).
func forEachIO(t *testing.T, test func(t *testing.T, mode transport.IOMode)) {
	for _, mode := range []transport.IOMode{transport.IOPooled, transport.IOPlain} {
		t.Run(mode.String(), func(t *testing.T) { test(t, mode) })
	}
}

// openEvents opens GET /ferry/events?<query> and returns the stream's reader, once its
// watch has been made.
func openEvents(t *testing.T, ts *testServer, query string) (*bufio.Reader, *http.Response, *session.Attachment) {
	t.Helper()
	watches := make(chan *session.Attachment, 1)
	ts.fake.mu.Lock()
	ts.fake.watchCh = watches
	ts.fake.mu.Unlock()
	resp, err := http.Get(ts.URL + "/ferry/events?" + query)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("events: %d %v", resp.StatusCode, resp.Header)
	}
	return bufio.NewReader(resp.Body), resp, <-watches
}

// readBlock returns the next block of the stream: its lines up to a blank one.
func readBlock(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("after %q: %v", b.String(), err)
		}
		b.WriteString(line)
		if line == "\n" {
			return b.String()
		}
	}
}

// A dashboard stream, in both I/O modes: the retry hint, the starting positions as id-only
// events, one event per message named after its channel with the ids of all channels,
// resets, comment heartbeats, and the close of a lapsed identity, after which the stream
// ends and its watch is detached.
func TestEvents(t *testing.T) {
	forEachIO(t, func(t *testing.T, mode transport.IOMode) {
		ts := newTestServer(t, func(c *transport.Config) { c.IO = mode })
		br, resp, a := openEvents(t, ts, "channel=a&channel=b&channel=a")
		// Pooled, the stream is served on the hijacked connection, which it ends with.
		if resp.Close != (mode == transport.IOPooled) {
			t.Fatalf("%s: Connection: close is %v", mode, resp.Close)
		}
		if got := readBlock(t, br); got != "retry: 2000\n: ferry events\n\n" {
			t.Fatalf("prelude %q", got)
		}
		// emptySource: every channel starts at e.0.
		for _, want := range []string{"id: a=e.0,b=\n\n", "id: a=e.0,b=e.0\n\n"} {
			if got := readBlock(t, br); got != want {
				t.Fatalf("starting position %q, want %q", got, want)
			}
		}
		a.Enqueue(session.MessageFrame(&session.Message{Channel: "b", Pos: session.Position{Epoch: "e", Offset: 1}, Data: json.RawMessage(`{"x":"y"}`)}))
		a.Enqueue(session.MessageFrame(&session.Message{Channel: "a", Pos: session.Position{Epoch: "e", Offset: 7}, Bin: []byte{0, 1, 2}}))
		off := uint64(9)
		a.Enqueue((&session.ServerFrame{T: session.FrameReset, Ch: "a", Ep: "f", Off: &off, Reason: "gone"}).Encode())
		a.Enqueue((&session.ServerFrame{T: session.FrameUnsub, Ch: "a"}).Encode()) // not a dashboard's business
		for _, want := range []string{
			"id: a=e.0,b=e.1\nevent: b\ndata: {\"x\":\"y\"}\n\n",
			"id: a=e.7,b=e.1\nevent: a\ndata: \"AAEC\"\n\n",
			"id: a=f.9,b=e.1\nevent: reset\ndata: {\"channel\":\"a\",\"epoch\":\"f\",\"offset\":9,\"reason\":\"gone\"}\n\n",
		} {
			if got := readBlock(t, br); got != want {
				t.Fatalf("event %q, want %q", got, want)
			}
		}
		before := time.Now().UnixMilli()
		a.Ping()
		got := readBlock(t, br)
		ts0, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(got, ": ping "), "\n\n"), 10, 64)
		if err != nil || ts0 < before {
			t.Fatalf("heartbeat %q, want a comment with the time", got)
		}

		ts.fake.revoke()
		a.Ping() // the heartbeat finds the identity lapsed
		got = readBlock(t, br)
		if strings.HasPrefix(got, ": ping ") {
			// That heartbeat's own ping is queued before its check runs, and the writer
			// may send it before the close empties the queue.
			got = readBlock(t, br)
		}
		if got != "event: close\ndata: {\"code\":4101,\"reason\":\"identity revoked\"}\n\n" {
			t.Fatalf("close %q", got)
		}
		if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
			t.Fatalf("after the close: %q, %v; want the end of the stream", rest, err)
		}
		await.Until(t, "the watch to be detached", func() bool { return ts.fake.watching() == 0 })
	})
}

// A drain ends an open stream with a close event (4003), in both I/O modes.
func TestEventsDrain(t *testing.T) {
	forEachIO(t, func(t *testing.T, mode transport.IOMode) {
		ts := newTestServer(t, func(c *transport.Config) { c.IO = mode })
		br, _, _ := openEvents(t, ts, "channel=a")
		for range 2 {
			readBlock(t, br) // the prelude, the starting position
		}
		ts.fake.shutdown()
		if got := readBlock(t, br); !strings.HasPrefix(got, "event: close\ndata: {\"code\":4003,") {
			t.Fatalf("after a drain: %q", got)
		}
		await.Until(t, "the watch to be detached", func() bool { return ts.fake.watching() == 0 })
	})
}

// Errors before the stream starts are answered with their status, as JSON: an
// EventSource stops on them.
func TestEventsRefusals(t *testing.T) {
	forEachIO(t, func(t *testing.T, mode transport.IOMode) {
		ts := newTestServer(t, func(c *transport.Config) {
			c.IO = mode
			c.Authenticate = func(r *http.Request) (session.Identity, bool, error) {
				user := r.URL.Query().Get("user")
				return session.Identity{User: user}, user != "", nil
			}
		})
		u := ts.URL + "/ferry/events?"
		cases := []struct {
			method, query string
			header        map[string]string
			status        int
			code          session.Code
		}{
			{"GET", "channel=a", nil, 401, session.CodeUnauthorized}, // no identity
			{"GET", "user=u", nil, 400, session.CodeBadRequest},      // no channel
			{"GET", "user=u&channel=bad%20name", nil, 400, session.CodeBadRequest},
			{"GET", "user=u&channel=close", nil, 400, session.CodeBadRequest},
			{"GET", "user=u&channel=a", map[string]string{"Last-Event-ID": "garbage"}, 400, session.CodeBadRequest},
			{"GET", "user=u&channel=a&since=a%3Dx", nil, 400, session.CodeBadRequest},
			{"GET", "user=u&channel=a&channel=forbidden", nil, 403, session.CodeForbidden},
			{"GET", "user=lapsed&channel=a", nil, 401, session.CodeUnauthorized},
			{"GET", "user=u&channel=a", map[string]string{"Origin": "https://elsewhere.example"}, 403, session.CodeForbidden},
			{"POST", "user=u&channel=a", nil, 405, session.CodeBadRequest},
		}
		for _, c := range cases {
			resp, body := do(t, c.method, u+c.query, "", "", c.header)
			wantError(t, resp, body, c.status, c.code)
		}
		if n := ts.fake.watching(); n != 0 {
			t.Errorf("%d watches left by refused requests", n)
		}
	})
}
