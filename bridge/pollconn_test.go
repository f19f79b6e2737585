package bridge

import (
	"bufio"
	"bytes"
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
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferryrt/ferry/bridge/memory"
	"github.com/ferryrt/ferry/internal/await"
	"github.com/ferryrt/ferry/internal/fclient"
	"github.com/ferryrt/ferry/transport"
)

// These tests speak HTTP/1.1 by hand on one TCP connection, as a browser's keep-alive
// connection does, to see what the long-polling handler does once it has taken that
// connection over (transport.Handoff): the polls, and whatever else comes on it.

// needTakeOver skips where the poll handler never takes a connection over: it needs epoll
// (Linux), and elsewhere polls stay on net/http, whose answers these tests don't expect.
// CI runs on Linux, where every one of them runs.
func needTakeOver(t testing.TB) {
	if runtime.GOOS != "linux" {
		t.Skip("connections are taken over for long-polling on Linux only")
	}
}

type rawConn struct {
	t    testing.TB
	c    net.Conn
	br   *bufio.Reader
	host string
	base string // path prefix, /ferry
}

func dialRaw(t testing.TB, ts *testServer) *rawConn {
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

func subscribed(t testing.TB, ts *testServer, ch string) *fclient.Client {
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
	pooledOnly(t)
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
		await.Until(t, `ts.Manager().Attached() == base+n`, func() bool { return ts.Manager().Attached() == base+n })
		// A poll held by net/http keeps two goroutines (its connection's and the
		// background read); taken over, none once the workers that read the polls have
		// ended (a quarter of a second idle).
		await.Until(t, `runtime.NumGoroutine()-before <= n/10`, func() bool { return runtime.NumGoroutine()-before <= n/10 })
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
	await.Until(t, `ts.Manager().Attached() == base+1`, func() bool { return ts.Manager().Attached() == base+1 })
	r.c.Close()
	await.Until(t, `ts.Manager().Attached() == base`, func() bool { return ts.Manager().Attached() == base })
	ts.publish(t, "room:a", "while away")
	r2 := dialRaw(t, ts)
	if got := msgData(r2.poll(c, "")); len(got) != 1 || got[0] != `"while away"` {
		t.Fatalf("after coming back: %q", got)
	}
}

// Requests on a taken-over connection that are not plain polls get net/http's own answer
// (they go back to it): a bad request closes that connection only, an unknown
// expectation gets 417, another HTTP version 505, and HTTP/1.0 keep-alive is kept.
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
		close  bool
	}{
		{"malformed header", func(r *rawConn, c *fclient.Client) string {
			return r.request("GET", "/poll?"+pollQuery(c, ""), "", "no colon here")
		}, 400, true},
		{"two Host headers", func(r *rawConn, c *fclient.Client) string {
			return r.request("GET", "/poll?"+pollQuery(c, ""), "", "Host: other.example")
		}, 400, true},
		{"unknown expectation", func(r *rawConn, c *fclient.Client) string {
			return r.request("GET", "/poll?"+pollQuery(c, "hold=0"), "", "Expect: foo")
		}, 417, true},
		{"HTTP/2.0 request line", func(r *rawConn, c *fclient.Client) string {
			return strings.Replace(r.request("GET", "/poll?"+pollQuery(c, "hold=0"), ""), "HTTP/1.1", "HTTP/2.0", 1)
		}, 505, true},
		{"bad credential", func(r *rawConn, c *fclient.Client) string {
			return r.request("GET", "/poll?session=nope&cursor=room:a=", "")
		}, 401, false},
		{"HTTP/1.0 keep-alive", func(r *rawConn, c *fclient.Client) string {
			return strings.Replace(r.request("GET", "/poll?"+pollQuery(c, "hold=0"), "", "Connection: keep-alive"), "HTTP/1.1", "HTTP/1.0", 1)
		}, 200, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := subscribed(t, ts, "room:b")
			r := dialRaw(t, ts)
			r.t = t
			r.poll(c, "hello=1")
			r.write(tc.req(r, c))
			resp, b := r.read()
			if resp.StatusCode != tc.status {
				t.Fatalf("answered %d %s, want %d", resp.StatusCode, b, tc.status)
			}
			if tc.close {
				if !resp.Close || !r.closed() {
					t.Fatalf("the connection stayed open after %d (Connection: close in the answer: %v)", tc.status, resp.Close)
				}
				return
			}
			if resp.Close {
				t.Fatal("the answer closes the connection")
			}
			// The connection goes on.
			ts.publish(t, "room:b", tc.name)
			r.poll(c, "hold=0")
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
	pooledOnly(t)
	needTakeOver(t)
	ts := newTestServer(t, Config{})
	held, idle := subscribed(t, ts, "room:a"), subscribed(t, ts, "room:a")
	rh, ri := dialRaw(t, ts), dialRaw(t, ts)
	rh.poll(held, "hello=1")
	ri.poll(idle, "hello=1")
	base := ts.Manager().Attached()
	rh.write(rh.request("GET", "/poll?"+pollQuery(held, ""), ""))
	await.Until(t, `ts.Manager().Attached() == base+1`, func() bool { return ts.Manager().Attached() == base+1 })

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

// listenedServer is a test server whose listener wrap wraps (newTestServer's, with the
// take-over of poll connections serving).
func listenedServer(t *testing.T, wrap func(net.Listener) net.Listener) *testServer {
	srv, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	srv.Mount(mux)
	hs := httptest.NewUnstartedServer(mux)
	hs.Listener = wrap(hs.Listener)
	hs.Start()
	handoff := make(chan struct{})
	go func() {
		hs.Config.Serve(srv.Handoff())
		close(handoff)
	}()
	await.Until(t, "the take-over of poll connections serving", srv.handoff.Serving)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		srv.Handoff().Close()
		<-handoff
		hs.CloseClientConnections()
		hs.Close()
	})
	return &testServer{Server: srv, URL: hs.URL + srv.Base(), http: hs, seen: map[string]int{}}
}

// A connection the poller can't watch is not held by the take-over: each poll on it is
// answered while its handler waits, and the connection goes back to net/http, which serves
// what follows on it.
func TestPollOnUnwatchableConnection(t *testing.T) {
	ts := listenedServer(t, func(l net.Listener) net.Listener { return opaqueListener{l} })
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

// Cross-origin long-polling on a taken-over connection: every answer (the first poll's,
// a held poll's once a message wakes it, a hold that ends with a ping, an error) carries
// the CORS and caching headers net/http gives the same request, with credentials for a
// listed origin and without for one let in by "*" only.
func TestTakenOverPollCORS(t *testing.T) {
	needTakeOver(t)
	ts := newTestServer(t, Config{AllowedOrigins: []string{"https://good.example", "*"}})
	for _, tc := range []struct {
		origin string
		creds  string
	}{{"https://good.example", "true"}, {"https://any.example", ""}} {
		t.Run(tc.origin, func(t *testing.T) {
			c := subscribed(t, ts, "room:cors")
			r := dialRaw(t, ts)
			r.t = t
			origin := "Origin: " + tc.origin
			check := func(what string, resp *http.Response, status int) {
				t.Helper()
				h := resp.Header
				if resp.StatusCode != status || h.Get("Access-Control-Allow-Origin") != tc.origin ||
					h.Get("Access-Control-Allow-Credentials") != tc.creds || h.Get("Vary") != "Origin" ||
					h.Get("Cache-Control") != "no-store" || h.Get("Content-Type") != "application/json" {
					t.Fatalf("%s: %d with headers %v; want %d, Access-Control-Allow-Origin %q, -Credentials %q, Vary: Origin, no-store, JSON",
						what, resp.StatusCode, h, status, tc.origin, tc.creds)
				}
			}
			pollFrames := func(what, extra string) []string {
				t.Helper()
				r.write(r.request("GET", "/poll?"+pollQuery(c, extra), "", origin))
				resp, b := r.read()
				check(what, resp, 200)
				var body struct{ Frames []fclient.Frame }
				if err := json.Unmarshal(b, &body); err != nil {
					t.Fatalf("%s: %q: %v", what, b, err)
				}
				for _, f := range body.Frames {
					c.Track(f)
				}
				return msgData(body.Frames)
			}
			pollFrames("first poll", "hello=1")
			// Held, then woken by a message: answered by the pool, not by the request's
			// own handler call.
			base := ts.Manager().Attached()
			done := make(chan []string, 1)
			go func() { done <- pollFrames("woken poll", "") }()
			await.Until(t, `ts.Manager().Attached() == base+1`, func() bool { return ts.Manager().Attached() == base+1 })
			ts.publish(t, "room:cors", "hi")
			if got := <-done; len(got) != 1 || got[0] != `"hi"` {
				t.Fatalf("woken poll got %q", got)
			}
			pollFrames("ping at the end of the hold", "hold=0")
			r.write(r.request("GET", "/poll?session=nope&cursor=", "", origin))
			resp, _ := r.read()
			check("refused poll", resp, 401)

			// The same poll served by net/http (Connection: close is never taken over)
			// carries the same headers.
			ref := dialRaw(t, ts)
			ref.write(ref.request("GET", "/poll?"+pollQuery(c, "hold=0"), "", origin, "Connection: close"))
			resp, _ = ref.read()
			check("net/http's answer", resp, 200)
		})
	}
}

// A header dribbled onto a taken-over connection is cut HeaderTimeout after its first
// byte, also when it turns out not to be a poll and goes back to net/http half way: the
// hand-back does not start net/http's ReadHeaderTimeout afresh.
func TestTakenOverHeaderTimeoutSpansHandBack(t *testing.T) {
	needTakeOver(t)
	const timeout = 2 * time.Second
	ts := newTestServerWith(t, Config{HeaderTimeout: timeout}, func(hs *http.Server) { hs.ReadHeaderTimeout = timeout })
	r := dialRaw(t, ts)
	r.write(r.request("GET", "/poll?x=1", "")) // refused (401), and taken over
	if resp, _ := r.read(); resp.StatusCode != 401 {
		t.Fatalf("first poll: %d", resp.StatusCode)
	}
	cut := make(chan time.Duration, 1)
	start := time.Now()
	r.write("GET " + r.base + "/poll") // still reads as a poll: the taken-over connection waits
	go func() {
		r.c.SetReadDeadline(time.Now().Add(4 * timeout))
		r.br.ReadByte() // the server closes having answered nothing
		cut <- time.Since(start)
	}()
	// Most of the timeout later, the request turns out to be something else (net/http's)
	// and the client goes on dribbling its header.
	time.Sleep(timeout * 3 / 4)
	r.c.Write([]byte("x HTTP/1.1\r\n"))
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case d := <-cut:
			if d > timeout*3/2 {
				t.Fatalf("cut %v after the header's first byte; the header timeout is %v", d.Round(time.Millisecond), timeout)
			}
			return
		case <-tick.C:
			r.c.Write([]byte("X-Slow: a\r\n")) // errors once the server has closed
		}
	}
}

// flooder is a taken-over connection fed pipelined copies of a bogus poll without end,
// as fast as the server answers them.
type flooder struct {
	r       *rawConn
	answers atomic.Int64
	paused  atomic.Bool // the writer waits (benchmarks alternate flooded and quiet rounds)
	stop    chan struct{}
	done    sync.WaitGroup
}

func startFlooder(t testing.TB, ts *testServer) *flooder {
	t.Helper()
	f := &flooder{r: dialRaw(t, ts), stop: make(chan struct{})}
	req := f.r.request("GET", "/poll?x=1", "") // 401 at once: no session needed
	f.r.write(req)
	if resp, _ := f.r.read(); resp.StatusCode != 401 { // and the connection is taken over
		t.Fatalf("flooder's first poll: %d", resp.StatusCode)
	}
	chunk := []byte(strings.Repeat(req, 500))
	f.done.Add(2)
	go func() {
		defer f.done.Done()
		for {
			select {
			case <-f.stop:
				return
			default:
			}
			if f.paused.Load() {
				time.Sleep(time.Millisecond)
				continue
			}
			// No write deadline: a write cut by one would leave half a request on the
			// connection, and the next chunk would turn the flood into a bad request
			// that ends it. close() ends a blocked write by closing the connection.
			if _, err := f.r.c.Write(chunk); err != nil {
				return
			}
		}
	}()
	go func() {
		defer f.done.Done()
		buf := make([]byte, 64<<10)
		for {
			n, err := f.r.c.Read(buf)
			f.answers.Add(int64(bytes.Count(buf[:n], []byte("HTTP/1.1 401"))))
			if err != nil {
				return
			}
		}
	}()
	return f
}

func (f *flooder) close() {
	close(f.stop)
	f.r.c.Close()
	f.done.Wait()
}

// A client that pipelines polls without end gets a bounded turn at a time: with 24 of
// them flooding (more than the pool has workers), a poll held on another taken-over
// connection still gets its message, while the flood goes on.
func TestTakenOverFloodersDoNotStallPolls(t *testing.T) {
	needTakeOver(t)
	ts := newTestServer(t, Config{Limits: transport.Limits{NegotiateRate: 1e6}})
	c := subscribed(t, ts, "room:a")
	r := dialRaw(t, ts)
	r.poll(c, "hello=1")

	floods := make([]*flooder, 24)
	for i := range floods {
		floods[i] = startFlooder(t, ts)
	}
	defer func() {
		for _, f := range floods {
			f.close()
		}
	}()
	// Every flooder is being served.
	await.Until(t, "every flooder to be answered 100 times", func() bool {
		for _, f := range floods {
			if f.answers.Load() < 100 {
				return false
			}
		}
		return true
	})
	base := ts.Manager().Attached()
	for round := range 3 {
		r.write(r.request("GET", "/poll?"+pollQuery(c, ""), ""))
		await.Until(t, `ts.Manager().Attached() == base+1`, func() bool { return ts.Manager().Attached() == base+1 })
		ts.publish(t, "room:a", round)
		before := make([]int64, len(floods))
		for i, f := range floods {
			before[i] = f.answers.Load()
		}
		r.c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if got := msgData(r.frames(c)); len(got) != 1 || got[0] != fmt.Sprint(round) {
			t.Fatalf("round %d: got %q", round, got)
		}
		// The flood did not stop for it: the flooders are still being answered.
		await.Until(t, "every flooder to be answered again", func() bool {
			for i, f := range floods {
				if f.answers.Load() <= before[i] {
					return false
				}
			}
			return true
		})
	}
}

// stallBroker is a memory.Broker whose TouchSession (the store call of every poll's
// Verify) waits, while paused, until released or its context ends.
type stallBroker struct {
	*memory.Broker
	paused    atomic.Bool
	release   chan struct{}
	blocked   atomic.Int64 // calls waiting now
	cancelled atomic.Int64 // calls ended by a cancelled context (not a deadline)
}

func (b *stallBroker) TouchSession(ctx context.Context, sid string, ttl time.Duration) (bool, error) {
	if b.paused.Load() {
		b.blocked.Add(1)
		defer b.blocked.Add(-1)
		select {
		case <-b.release:
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				b.cancelled.Add(1)
			}
			return false, ctx.Err()
		}
	}
	return b.Broker.TouchSession(ctx, sid, ttl)
}

// A session store that stops answering holds up no worker of the pool: with more polls
// waiting on it than the pool has workers, a poll held on another taken-over connection
// still gets its message; a waiting poll whose client leaves has its store call
// cancelled; the others get 503, code 4000 (retry), once StoreTimeout has passed.
func TestTakenOverStoreStallHoldsNoWorker(t *testing.T) {
	needTakeOver(t)
	broker := &stallBroker{Broker: memory.New(memory.Config{}), release: make(chan struct{})}
	t.Cleanup(func() { broker.Close() })
	defer close(broker.release)
	ts := newTestServer(t, Config{Broker: broker, StoreTimeout: 2 * time.Second, Limits: transport.Limits{NegotiateRate: 1e6, NegotiateBurst: 1e6}})
	c := subscribed(t, ts, "room:a")
	r := dialRaw(t, ts)
	r.poll(c, "hello=1")

	n := 4*runtime.GOMAXPROCS(0) + 8 // more than the pool's workers
	waiting := make([]*rawConn, n)
	clients := make([]*fclient.Client, n)
	for i := range n {
		clients[i] = subscribed(t, ts, "room:s")
		waiting[i] = dialRaw(t, ts)
		waiting[i].poll(clients[i], "hello=1") // taken over: the next poll is read by the pool
	}
	base := ts.Manager().Attached()
	r.write(r.request("GET", "/poll?"+pollQuery(c, ""), ""))
	await.Until(t, `ts.Manager().Attached() == base+1`, func() bool { return ts.Manager().Attached() == base+1 })

	broker.paused.Store(true)
	for i := range n {
		waiting[i].write(waiting[i].request("GET", "/poll?"+pollQuery(clients[i], ""), ""))
	}
	// All of them wait on the store at once (had they waited on the pool's workers, the
	// ones beyond the workers' number would still be queued behind them).
	await.Until(t, `broker.blocked.Load() == int64(n)`, func() bool { return broker.blocked.Load() == int64(n) })
	ts.publish(t, "room:a", "flowing")
	if got := msgData(r.frames(c)); len(got) != 1 || got[0] != `"flowing"` {
		t.Fatalf("held poll got %q", got)
	}

	waiting[0].c.Close()
	await.Until(t, `broker.cancelled.Load() == 1`, func() bool { return broker.cancelled.Load() == 1 })
	for i := 1; i < n; i++ {
		resp, b := waiting[i].read()
		var e struct{ Code int }
		json.Unmarshal(b, &e)
		if resp.StatusCode != 503 || e.Code != 4000 {
			t.Fatalf("poll %d waiting on the store answered %d %s, want 503 with code 4000", i, resp.StatusCode, b)
		}
	}
}

// An answer the kernel takes only part of at once is finished off the pool under a write
// deadline; the connection's next answers, written without waiting, still go out once
// that deadline has passed (the runtime fails any write past a connection's deadline,
// non-blocking ones too). The wait is the write bound of the transport (10 s): what is
// under test is that time passes.
func TestTakenOverPollAfterPartialAnswer(t *testing.T) {
	pooledOnly(t)
	needTakeOver(t)
	ts := listenedServer(t, func(l net.Listener) net.Listener { return smallSendBuffers{l} })
	c := subscribed(t, ts, "room:big")
	r := dialRaw(t, ts)
	r.poll(c, "hello=1")
	pad := strings.Repeat("p", 60<<10)
	for i := range 8 {
		ts.publish(t, "room:big", fmt.Sprint(i, pad)) // more than the small buffers hold
	}
	if got := msgData(r.poll(c, "hold=0")); len(got) != 8 {
		t.Fatalf("the large answer held %d messages, want 8", len(got))
	}
	time.Sleep(11 * time.Second) // past the deadline of the rest's write
	ts.publish(t, "room:big", "after")
	if got := msgData(r.poll(c, "hold=0")); len(got) != 1 || got[0] != `"after"` {
		t.Fatalf("the answer after the write bound: %q", got)
	}
}

// smallSendBuffers hands out connections whose kernel send buffer is small, so that an
// answer of some KiB is not taken whole at once.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(4096)
	}
	return c, err
}
