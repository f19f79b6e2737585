package bridge

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ferryrt/ferry/internal/fclient"
	"github.com/ferryrt/ferry/transport"
)

// These tests speak HTTP/1.1 by hand on one TCP connection, as a browser's keep-alive
// connection does, to see what the long-polling handler does once it has taken that
// connection over (transport.Handoff): the polls, and whatever else comes on it.

// needTakeOver skips where the poll handler never takes a connection over: it needs epoll
// (Linux), and elsewhere polls stay on net/http, whose answers these tests don't expect.
// CI runs on Linux, where every one of them runs.
func needTakeOver(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("connections are taken over for long-polling on Linux only")
	}
}

type rawConn struct {
	t    *testing.T
	c    net.Conn
	br   *bufio.Reader
	host string
	base string // path prefix, /ferry
}

func dialRaw(t *testing.T, ts *testServer) *rawConn {
	t.Helper()
	u, _ := url.Parse(ts.URL)
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, br: bufio.NewReader(c), host: u.Host, base: u.Path}
}

func pollQuery(c *fclient.Client, extra string) string {
	q := url.Values{"session": {c.Session}, "cursor": {c.Cursor()}}.Encode()
	if extra != "" {
		q += "&" + extra
	}
	return q
}

// request returns the bytes of a request; headers are "Name: value" lines.
func (r *rawConn) request(method, pathQuery, body string, headers ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s%s HTTP/1.1\r\nHost: %s\r\n", method, r.base, pathQuery, r.host)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	if body != "" {
		fmt.Fprintf(&b, "Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n" + body)
	return b.String()
}

func (r *rawConn) write(s string) {
	r.t.Helper()
	if _, err := io.WriteString(r.c, s); err != nil {
		r.t.Fatal(err)
	}
}

// read reads one response and its body.
func (r *rawConn) read() (*http.Response, []byte) {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(r.br, nil)
	if err != nil {
		r.t.Fatalf("reading a response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatalf("reading a response body: %v", err)
	}
	return resp, b
}

// poll sends a poll and returns its frames, tracked into c's cursor.
func (r *rawConn) poll(c *fclient.Client, extra string) []fclient.Frame {
	r.t.Helper()
	r.write(r.request("GET", "/poll?"+pollQuery(c, extra), ""))
	return r.frames(c)
}

func (r *rawConn) frames(c *fclient.Client) []fclient.Frame {
	r.t.Helper()
	resp, b := r.read()
	if resp.StatusCode != 200 {
		r.t.Fatalf("poll: %d %s", resp.StatusCode, b)
	}
	var body struct{ Frames []fclient.Frame }
	if err := json.Unmarshal(b, &body); err != nil {
		r.t.Fatalf("poll answer %q: %v", b, err)
	}
	for _, f := range body.Frames {
		c.Track(f)
	}
	return body.Frames
}

// closed reports whether the server closed the connection within a few seconds: EOF,
// or a reset when it closed with some of the request unread.
func (r *rawConn) closed() bool {
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := r.br.ReadByte()
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

func subscribed(t *testing.T, ts *testServer, ch string) *fclient.Client {
	c := ts.client(t)
	c.Subscribe(ch, "")
	return c
}

func msgData(frames []fclient.Frame) []string {
	var out []string
	for _, f := range frames {
		if f.T == "msg" {
			out = append(out, string(f.D))
		}
	}
	return out
}

// Held polls on taken-over connections cost no goroutine, and every message reaches
// every poller once, in order, on the connection it started on.
func TestTakenOverPollsHoldNoGoroutine(t *testing.T) {
	needTakeOver(t)
	ts := newTestServer(t, Config{Limits: transport.Limits{NegotiateRate: 1e6}})
	const n = 100
	clients := make([]*fclient.Client, n)
	conns := make([]*rawConn, n)
	for i := range n {
		clients[i] = subscribed(t, ts, "room:a")
		conns[i] = dialRaw(t, ts)
		conns[i].poll(clients[i], "hello=1")
	}
	base := ts.Manager().Attached()
	before := runtime.NumGoroutine()
	for round := range 3 {
		for i := range n {
			conns[i].write(conns[i].request("GET", "/poll?"+pollQuery(clients[i], ""), ""))
		}
		waitUntil(t, func() bool { return ts.Manager().Attached() == base+n })
		// A poll held by net/http keeps two goroutines (its connection's and the
		// background read); taken over, none once the workers that read the polls have
		// ended (a quarter of a second idle).
		waitUntil(t, func() bool { return runtime.NumGoroutine()-before <= n/10 })
		ts.publish(t, "room:a", round)
		for i := range n {
			if got := msgData(conns[i].frames(clients[i])); len(got) != 1 || got[0] != fmt.Sprint(round) {
				t.Fatalf("round %d, client %d: got %q", round, i, got)
			}
		}
	}
}

// Whatever else comes on a taken-over connection (an upstream POST, a pipelined poll) is
// answered in order, by net/http for what is not a poll, and the connection goes on.
func TestTakenOverConnectionHandsBackOtherRequests(t *testing.T) {
	needTakeOver(t)
	ts := newTestServer(t, Config{})
	c := subscribed(t, ts, "room:a")
	r := dialRaw(t, ts)
	r.poll(c, "hello=1")
	for i := range 3 {
		ts.publish(t, "room:a", i)
		// A poll, then a send, then a poll, written at once.
		send := r.request("POST", "/send?session="+url.QueryEscape(c.Session), fmt.Sprintf(`{"frames":[{"t":"send","seq":%d,"d":%d}]}`, c.NextSeq(), i))
		r.write(r.request("GET", "/poll?"+pollQuery(c, "hold=0"), "") + send)
		if got := msgData(r.frames(c)); len(got) != 1 || got[0] != fmt.Sprint(i) {
			t.Fatalf("round %d: first poll got %q", i, got)
		}
		resp, b := r.read()
		if resp.StatusCode != 200 || !strings.Contains(string(b), `"acks"`) {
			t.Fatalf("round %d: send answered %d %s", i, resp.StatusCode, b)
		}
		ts.publish(t, "room:a", i+100)
		r.write(r.request("GET", "/poll?"+pollQuery(c, ""), ""))
		if got := msgData(r.frames(c)); len(got) != 1 || got[0] != fmt.Sprint(i+100) {
			t.Fatalf("round %d: poll after the send got %q", i, got)
		}
	}
	// A preflight and a page on the same connection, too.
	r.write(r.request("OPTIONS", "/poll?x=1", "", "Origin: http://"+r.host, "Access-Control-Request-Method: GET"))
	if resp, _ := r.read(); resp.StatusCode != 204 {
		t.Fatalf("preflight: %d", resp.StatusCode)
	}
	r.write(r.request("GET", "/client.js", ""))
	if resp, b := r.read(); resp.StatusCode != 200 || len(b) == 0 {
		t.Fatalf("client.js: %d, %d bytes", resp.StatusCode, len(b))
	}
	r.poll(c, "hold=0")
}

// A client that leaves while its poll is held loses nothing: its next poll, on a new
// connection with the same cursor, continues the parked attachment.
func TestTakenOverPollClientLeaves(t *testing.T) {
	needTakeOver(t)
	ts := newTestServer(t, Config{})
	c := subscribed(t, ts, "room:a")
	r := dialRaw(t, ts)
	r.poll(c, "hello=1")
	base := ts.Manager().Attached()
	r.write(r.request("GET", "/poll?"+pollQuery(c, ""), ""))
	waitUntil(t, func() bool { return ts.Manager().Attached() == base+1 })
	r.c.Close()
	waitUntil(t, func() bool { return ts.Manager().Attached() == base })
	ts.publish(t, "room:a", "while away")
	r2 := dialRaw(t, ts)
	if got := msgData(r2.poll(c, "")); len(got) != 1 || got[0] != `"while away"` {
		t.Fatalf("after coming back: %q", got)
	}
}

// Bad requests on a taken-over connection are answered with their status and close that
// connection only.
func TestTakenOverBadRequests(t *testing.T) {
	needTakeOver(t)
	ts := newTestServer(t, Config{})
	by := subscribed(t, ts, "room:a")
	byConn := dialRaw(t, ts)
	byConn.poll(by, "hello=1")
	for _, tc := range []struct {
		name   string
		req    func(r *rawConn, c *fclient.Client) string
		status int
	}{
		{"poll with a body", func(r *rawConn, c *fclient.Client) string {
			return r.request("GET", "/poll?"+pollQuery(c, ""), `{"x":1}`)
		}, 400},
		{"chunked poll", func(r *rawConn, c *fclient.Client) string {
			return r.request("GET", "/poll?"+pollQuery(c, ""), "", "Transfer-Encoding: chunked") + "0\r\n\r\n"
		}, 400},
		{"header too large", func(r *rawConn, c *fclient.Client) string {
			return r.request("GET", "/poll?"+pollQuery(c, ""), "", "X-Pad: "+strings.Repeat("a", 70<<10))
		}, 431},
		{"malformed header", func(r *rawConn, c *fclient.Client) string {
			return r.request("GET", "/poll?"+pollQuery(c, ""), "", "no colon here")
		}, 400},
		{"two Host headers", func(r *rawConn, c *fclient.Client) string {
			return r.request("GET", "/poll?"+pollQuery(c, ""), "", "Host: other.example")
		}, 400},
		{"bad credential", func(r *rawConn, c *fclient.Client) string {
			return r.request("GET", "/poll?session=nope&cursor=room:a=", "")
		}, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := subscribed(t, ts, "room:a")
			r := dialRaw(t, ts)
			r.t = t
			r.poll(c, "hello=1")
			r.write(tc.req(r, c))
			resp, b := r.read()
			if resp.StatusCode != tc.status {
				t.Fatalf("answered %d %s, want %d", resp.StatusCode, b, tc.status)
			}
			var e struct{ Code, Reason any }
			if json.Unmarshal(b, &e) != nil || e.Reason == "" {
				t.Fatalf("error body %q names no reason", b)
			}
			if tc.status != 401 && !r.closed() {
				t.Fatal("the connection stayed open after a request that can't be framed")
			}
		})
	}
	ts.publish(t, "room:a", "still here")
	if got := msgData(byConn.poll(by, "")); len(got) != 1 || got[0] != `"still here"` {
		t.Fatalf("bystander got %q", got)
	}
}

// A drain answers held polls with the shutdown close frame and closes idle taken-over
// connections.
func TestTakenOverConnectionsDrain(t *testing.T) {
	needTakeOver(t)
	ts := newTestServer(t, Config{})
	held, idle := subscribed(t, ts, "room:a"), subscribed(t, ts, "room:a")
	rh, ri := dialRaw(t, ts), dialRaw(t, ts)
	rh.poll(held, "hello=1")
	ri.poll(idle, "hello=1")
	base := ts.Manager().Attached()
	rh.write(rh.request("GET", "/poll?"+pollQuery(held, ""), ""))
	waitUntil(t, func() bool { return ts.Manager().Attached() == base+1 })

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ts.Shutdown(ctx) }()
	resp, b := rh.read()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"code":4003`) || !resp.Close {
		t.Fatalf("held poll answered %d %s (close %v), want the 4003 close frame and Connection: close", resp.StatusCode, b, resp.Close)
	}
	if !ri.closed() {
		t.Fatal("an idle taken-over connection stayed open through the drain")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// opaqueListener hands out connections that hide their descriptor (as a wrapping
// listener's may), which the poller can't watch.
type opaqueListener struct{ net.Listener }

type opaqueConn struct{ net.Conn }

func (l opaqueListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return opaqueConn{c}, nil
}

// A connection the poller can't watch is not held by the take-over: each poll on it is
// answered while its handler waits, and the connection goes back to net/http, which serves
// what follows on it.
func TestPollOnUnwatchableConnection(t *testing.T) {
	srv, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	srv.Mount(mux)
	hs := httptest.NewUnstartedServer(mux)
	hs.Listener = opaqueListener{hs.Listener}
	hs.Start()
	handoff := make(chan struct{})
	go func() {
		hs.Config.Serve(srv.Handoff())
		close(handoff)
	}()
	waitUntil(t, srv.handoff.Serving)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		srv.Handoff().Close()
		<-handoff
		hs.CloseClientConnections()
		hs.Close()
	})
	ts := &testServer{Server: srv, URL: hs.URL + srv.Base(), http: hs, seen: map[string]int{}}
	c := subscribed(t, ts, "room:a")
	r := dialRaw(t, ts)
	r.poll(c, "hello=1")
	for i := range 3 {
		ts.publish(t, "room:a", i)
		if got := msgData(r.poll(c, "")); len(got) != 1 || got[0] != fmt.Sprint(i) {
			t.Fatalf("poll %d got %q", i, got)
		}
		r.write(r.request("POST", "/send?session="+url.QueryEscape(c.Session), fmt.Sprintf(`{"frames":[{"t":"send","seq":%d,"d":%d}]}`, c.NextSeq(), i)))
		if resp, b := r.read(); resp.StatusCode != 200 || !strings.Contains(string(b), `"acks"`) {
			t.Fatalf("send %d answered %d %s", i, resp.StatusCode, b)
		}
	}
}
