package bridge

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ferryrt/ferry/internal/await"
	"github.com/ferryrt/ferry/internal/fclient"
	"github.com/ferryrt/ferry/transport"
)

// dialWS opens a bare WebSocket attachment for a new session of ts and reads its hello.
func dialWS(t *testing.T, ts *testServer) *websocket.Conn {
	t.Helper()
	c := ts.client(t)
	u := "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws?session=" + url.QueryEscape(c.Session)
	conn, _, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, msg, err := conn.ReadMessage(); err != nil || !strings.HasPrefix(string(msg), `{"t":"hello"`) {
		t.Fatalf("first frame %s, %v; want hello", msg, err)
	}
	return conn
}

// A client that stops answering pings is closed with 4004 after two silent heartbeats,
// while one that answers stays.
func TestWebSocketHeartbeatTimeout(t *testing.T) {
	forEachIO(t, func(t *testing.T, io transport.IOMode) {
		const hb = 50 * time.Millisecond
		ts := newTestServer(t, Config{Heartbeat: hb, IO: io})
		start := time.Now()
		mute := dialWS(t, ts)
		mute.SetPingHandler(func(string) error { return nil }) // reads pings, never pongs
		alive := dialWS(t, ts)

		// The answering client reads (and so pongs) in the background until the mute one is
		// closed, counting the heartbeats it saw.
		pings := make(chan int, 1)
		stop := make(chan struct{})
		go func() {
			n := 0
			for {
				select {
				case <-stop:
					pings <- n
					return
				default:
				}
				alive.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, msg, err := alive.ReadMessage()
				if err != nil {
					pings <- -1
					return
				}
				if strings.HasPrefix(string(msg), `{"t":"ping"`) {
					n++
				}
			}
		}()

		mute.SetReadDeadline(time.Now().Add(10 * time.Second))
		var err error
		for err == nil {
			_, _, err = mute.ReadMessage()
		}
		silent := time.Since(start)
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != 4004 {
			t.Fatalf("mute client: %v, want close 4004", err)
		}
		if silent < 2*hb {
			t.Errorf("closed after %v, before two heartbeats (%v)", silent, 2*hb)
		}
		close(stop)
		alive.WriteMessage(websocket.TextMessage, []byte(`{"t":"pong","seq":1}`)) // unblocks its read
		if n := <-pings; n < 2 {
			t.Fatalf("the answering client saw %d pings and then lost its connection, want it kept open", n)
		}
		await.Until(t, "the answering attachment alone left", func() bool { return ts.Manager().Attached() == 1 })
	})
}

// An idle WebSocket holds no goroutine on the server: readability of its connection is
// watched by the kernel (netpoll), and a writer runs only while there is something to
// write. That stays true after the pongs and pings every live client sends (gorilla
// would wait for a data frame after handling them). The session still answers pings,
// takes frames, and notices the client leaving.
func TestIdleWebSocketsHoldNoGoroutine(t *testing.T) {
	pooledOnly(t)
	it := newIdleTest(t)
	conns := make([]*websocket.Conn, idleConns)
	for i := range conns {
		conns[i] = dialWS(t, it.ts)
	}
	// What a live client sends while idle: a pong for each heartbeat (unsolicited here,
	// which RFC 6455 allows), now and then a ping of its own.
	for _, c := range conns {
		if err := c.WriteControl(websocket.PongMessage, nil, time.Now().Add(5*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	pong := make(chan string, 1)
	conns[0].SetPongHandler(func(p string) error { pong <- p; return nil })
	conns[0].WriteControl(websocket.PingMessage, []byte("still there?"), time.Now().Add(5*time.Second))
	// A frame from an idle client is handled too (a subscription, answered with sub);
	// the server's pong comes before it, so it has been handled when the sub is read.
	conns[0].WriteMessage(websocket.TextMessage, []byte(`{"t":"sub","ch":"room:idle"}`))
	conns[0].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, msg, err := conns[0].ReadMessage(); err != nil || !strings.HasPrefix(string(msg), `{"t":"sub"`) {
		t.Fatalf("answer to a sub from an idle client: %s, %v", msg, err)
	}
	select {
	case p := <-pong:
		if p != "still there?" {
			t.Errorf("pong carried %q, want the ping's payload", p)
		}
	default:
		t.Error("the server did not answer the client's ping before its next frame")
	}

	// The writers of the hellos and the readers of the pongs end by themselves.
	it.check(func() {
		for _, c := range conns {
			c.Close()
		}
	})
}

// An idle SSE stream holds no goroutine either, and a client leaving still ends it.
func TestIdleSSEStreamsHoldNoGoroutine(t *testing.T) {
	pooledOnly(t)
	it := newIdleTest(t)
	u, _ := url.Parse(it.ts.URL)
	conns := make([]net.Conn, idleConns)
	for i := range conns {
		c := it.ts.client(t)
		conn, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		fmt.Fprintf(conn, "GET %s/sse?session=%s HTTP/1.1\r\nHost: %s\r\n\r\n", u.Path, url.QueryEscape(c.Session), u.Host)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(conn)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("stream %d: %v before the hello event", i, err)
			}
			if strings.HasPrefix(line, `data: {"t":"hello"`) {
				break
			}
		}
		conns[i] = conn
	}
	it.check(func() {
		for _, c := range conns {
			c.Close()
		}
	})
}

// idleConns is how many idle connections a test holds open: enough that one goroutine
// each would stand out from the server's few.
const idleConns = 100

type idleTest struct {
	t      *testing.T
	ts     *testServer
	before int // goroutines before the connections
}

func newIdleTest(t *testing.T) *idleTest {
	if runtime.GOOS != "linux" {
		t.Skip("connections are watched without a goroutine on Linux only; elsewhere each has a reader goroutine")
	}
	ts := newTestServer(t, Config{Limits: transport.Limits{NegotiateRate: 1000, NegotiateBurst: 1000}})
	return &idleTest{t: t, ts: ts, before: runtime.NumGoroutine()}
}

// check waits until the idleConns open connections add at most a tenth of a goroutine
// each, then closes them and waits for every attachment to end.
func (it *idleTest) check(closeAll func()) {
	it.t.Helper()
	await.Until(it.t, "at most idleConns/10 goroutines more with idleConns idle connections open", func() bool {
		return runtime.NumGoroutine()-it.before <= idleConns/10
	})
	if got := it.ts.Manager().Attached(); got != idleConns {
		it.t.Fatalf("%d attachments, want %d", got, idleConns)
	}
	closeAll()
	await.Until(it.t, "no attachment left after every client closed", func() bool { return it.ts.Manager().Attached() == 0 })
}

// A WebSocket whose writer once left the pool (a subscription that reads history is
// written by a goroutine of its own, which sets a write deadline) still takes the pooled
// writes that come after that deadline has passed.
func TestWebSocketWritesAfterAnOffPoolWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the 10 s write deadline")
	}
	t.Parallel()
	ts := newTestServer(t, Config{})
	c := ts.client(t)
	s, err := c.WebSocket(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	next := func(what string, match func(fclient.Frame) bool) {
		t.Helper()
		timeout := time.After(5 * time.Second)
		for {
			select {
			case f, ok := <-s.Frames:
				if !ok {
					t.Fatalf("waiting for %s: the stream ended: %v", what, s.Err())
				}
				if match(f) {
					return
				}
			case <-timeout:
				t.Fatalf("no %s within 5 s", what)
			}
		}
	}
	s.WriteFrame(map[string]any{"t": "sub", "ch": "room:w"})
	next("sub", func(f fclient.Frame) bool { return f.T == "sub" && f.Ch == "room:w" })
	// Past the deadline of that write (writeWait, 10 s), with the connection idle.
	time.Sleep(11 * time.Second)
	for i := range 3 {
		ts.publish(t, "room:w", i)
		next(fmt.Sprintf("message %d", i), func(f fclient.Frame) bool { return f.T == "msg" && string(f.D) == fmt.Sprint(i) })
	}
}
