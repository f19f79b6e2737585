package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/ferryrt/ferry/internal/await"
)

// The server must end every goroutine it starts once closed.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testServer is a floor behind httptest, not started yet.
func testServer(t *testing.T, cfg config) (*server, *httptest.Server) {
	t.Helper()
	s := newServer(cfg)
	ts := httptest.NewServer(s.handler())
	t.Cleanup(ts.Close)
	t.Cleanup(s.Close) // first: it ends the hijacked connections, which ts.Close does not
	return s, ts
}

// dial connects a client; rcvbuf, when not 0, shrinks its socket's receive buffer.
func dial(t *testing.T, ts *httptest.Server, rcvbuf int) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil && rcvbuf > 0 {
			err = c.(*net.TCPConn).SetReadBuffer(rcvbuf)
		}
		return c, err
	}}
	c, _, err := d.Dial("ws"+strings.TrimPrefix(ts.URL, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialAll connects n clients and waits until the server has registered them all.
func dialAll(t *testing.T, s *server, ts *httptest.Server, n int) []*websocket.Conn {
	t.Helper()
	var cs []*websocket.Conn
	for range n {
		cs = append(cs, dial(t, ts, 0))
	}
	await.Until(t, fmt.Sprintf("%d connections registered", n), func() bool { return s.count() == n })
	return cs
}

func publish(t testing.TB, ts *httptest.Server, body string) {
	t.Helper()
	resp, err := http.Post(ts.URL+"/publish", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("publish: %s", resp.Status)
	}
}

// message is the i-th test message, padded with pad bytes.
func message(i, pad int) string {
	return fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, strings.Repeat("x", pad))
}

// index reads the i of a message.
func index(line []byte) (int, error) {
	rest, ok := bytes.CutPrefix(line, []byte(`{"i":`))
	if !ok {
		return 0, fmt.Errorf("not a test message: %.40q", line)
	}
	end := bytes.IndexByte(rest, ',')
	if end < 0 {
		return 0, fmt.Errorf("not a test message: %.40q", line)
	}
	return strconv.Atoi(string(rest[:end]))
}

// receive reads frames from c until it holds the messages 0 to n-1, and fails the test
// unless they arrive exactly once each, in order. It returns the number of messages of
// each frame.
func receive(c *websocket.Conn, n int) ([]int, error) { return receiveFrom(c, 0, n) }

// receiveFrom is receive for the messages from to n-1.
func receiveFrom(c *websocket.Conn, from, n int) ([]int, error) {
	var perFrame []int
	next := from
	c.SetReadDeadline(time.Now().Add(await.Timeout))
	for next < n {
		typ, b, err := c.ReadMessage()
		if err != nil {
			return perFrame, fmt.Errorf("after %d of %d messages: %w", next, n, err)
		}
		if typ != websocket.TextMessage {
			return perFrame, fmt.Errorf("frame type %d", typ)
		}
		lines := bytes.Split(b, []byte("\n"))
		for _, line := range lines {
			i, err := index(line)
			if err != nil {
				return perFrame, err
			}
			if i != next {
				return perFrame, fmt.Errorf("message %d where %d was due", i, next)
			}
			next++
		}
		perFrame = append(perFrame, len(lines))
	}
	return perFrame, nil
}

func TestEveryClientGetsEveryMessageOnceInOrder(t *testing.T) {
	s, ts := testServer(t, config{workers: 2})
	s.start()
	clients := dialAll(t, s, ts, 5)
	const n = 200
	errs := make(chan error, len(clients))
	for _, c := range clients {
		go func() {
			_, err := receive(c, n)
			errs <- err
		}()
	}
	for i := range n {
		publish(t, ts, message(i, 0))
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestPendingMessagesShareOneFrame(t *testing.T) {
	s, ts := testServer(t, config{workers: 3})
	clients := dialAll(t, s, ts, 4)
	// Published while the broadcaster is not running: all pending when it first looks.
	for i := range 5 {
		publish(t, ts, message(i, 10))
	}
	s.start()
	for i, c := range clients {
		perFrame, err := receive(c, 5)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		if len(perFrame) != 1 {
			t.Fatalf("client %d: messages per frame %v, want [5]", i, perFrame)
		}
	}
	// Nothing pending now: the next message goes alone.
	publish(t, ts, message(5, 10))
	for i, c := range clients {
		perFrame, err := receiveFrom(c, 5, 6)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		if len(perFrame) != 1 || perFrame[0] != 1 {
			t.Fatalf("client %d: messages per frame %v, want [1]", i, perFrame)
		}
	}
	if m, f := s.messages.Load(), s.frames.Load(); m != 6 || f != 2 {
		t.Fatalf("counted %d messages in %d frames, want 6 in 2", m, f)
	}
}

func TestFramesStayWithinMaxFrame(t *testing.T) {
	const maxFrame = 250
	s, ts := testServer(t, config{maxFrame: maxFrame})
	clients := dialAll(t, s, ts, 2)
	const n = 20
	for i := range n {
		publish(t, ts, message(i, 80))
	}
	s.start()
	for i, c := range clients {
		perFrame, err := receive(c, n)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		// A message is some 100 bytes: two fit in 250, not three.
		for _, m := range perFrame {
			if m != 2 {
				t.Fatalf("client %d: messages per frame %v, want 2 each", i, perFrame)
			}
		}
	}
}

func TestPublishTakesOneLine(t *testing.T) {
	s, ts := testServer(t, config{})
	s.start()
	for _, bad := range []string{"", "\n", `{"a":1}` + "\n" + `{"b":2}`} {
		resp, err := http.Post(ts.URL+"/publish", "application/json", strings.NewReader(bad))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("publish %q: %s, want 400", bad, resp.Status)
		}
	}
	c := dialAll(t, s, ts, 1)[0]
	publish(t, ts, message(0, 0)+"\r\n") // a final newline is not part of the message
	if _, err := receive(c, 1); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(ts.URL + "/publish")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET /publish: %s", resp.Status)
	}
}

// A client that stops reading is dropped once a write to it times out, and the others,
// in the same shard, still get every message.
func TestStalledClientIsDroppedOthersGetEverything(t *testing.T) {
	s, ts := testServer(t, config{workers: 1, writeWait: time.Second})
	s.start()
	stalled := dial(t, ts, 4096)
	var readers []*websocket.Conn
	for range 4 {
		readers = append(readers, dial(t, ts, 0))
	}
	await.Until(t, "5 connections registered", func() bool { return s.count() == 5 })
	type result struct {
		n   int
		err error
	}
	results := make(chan result, len(readers))
	for _, c := range readers {
		go func() {
			n, err := receiveUntilEnd(c)
			results <- result{n, err}
		}()
	}
	// Publish until the stalled client's socket buffers are full and a write to it has
	// timed out.
	n := 0
	for ; s.dropped.Load() == 0; n++ {
		if n == 20000 {
			t.Fatalf("%d messages of 16 KiB published, the stalled client still there", n)
		}
		publish(t, ts, message(n, 16<<10))
	}
	publish(t, ts, message(-1, 0))
	for range readers {
		if r := <-results; r.err != nil || r.n != n {
			t.Errorf("a reader got %d of %d messages: %v", r.n, n, r.err)
		}
	}
	if got := s.dropped.Load(); got != 1 {
		t.Errorf("%d connections dropped, want the stalled one only", got)
	}
	if got := s.count(); got != len(readers) {
		t.Errorf("%d connections registered, want the %d readers", got, len(readers))
	}
	// The stalled client, reading again (with a normal buffer, or the kernel would take
	// its time to drain what is queued), finds its connection ended.
	if err := stalled.NetConn().(*net.TCPConn).SetReadBuffer(1 << 20); err != nil {
		t.Fatal(err)
	}
	stalled.SetReadDeadline(time.Now().Add(await.Timeout))
	var err error
	got := 0
	for err == nil {
		var b []byte
		_, b, err = stalled.ReadMessage()
		got += len(b)
	}
	t.Logf("dropped after %d messages; the stalled client read %d bytes, then: %v", n, got, err)
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		t.Fatalf("the stalled client's connection is still open: %v", err)
	}
}

// receiveUntilEnd reads frames from c until the message -1, and fails unless the
// messages before it are 0, 1, 2... each once, in order. It returns how many there were.
func receiveUntilEnd(c *websocket.Conn) (int, error) {
	next := 0
	c.SetReadDeadline(time.Now().Add(await.Timeout))
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			return next, fmt.Errorf("after %d messages: %w", next, err)
		}
		for line := range bytes.SplitSeq(b, []byte("\n")) {
			i, err := index(line)
			switch {
			case err != nil:
				return next, err
			case i == -1:
				return next, nil
			case i != next:
				return next, fmt.Errorf("message %d where %d was due", i, next)
			}
			next++
		}
	}
}

func TestCloseDisconnectsEveryClient(t *testing.T) {
	s := newServer(config{})
	ts := httptest.NewServer(s.handler())
	s.start()
	clients := dialAll(t, s, ts, 3)
	s.Close()
	for i, c := range clients {
		c.SetReadDeadline(time.Now().Add(await.Timeout))
		_, _, err := c.ReadMessage()
		if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
			t.Errorf("client %d: %v, want a going-away close", i, err)
		}
		c.Close()
	}
	resp, err := http.Post(ts.URL+"/publish", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("publish after Close: %s, want 503", resp.Status)
	}
	ts.Close()
	goleak.VerifyNone(t)
}
