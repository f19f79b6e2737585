//go:build unix

package transport_test

import (
	"bufio"
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ferryrt/ferry/session"
	"github.com/ferryrt/ferry/transport"
)

// Clients that read late. One that stops reading gets its frames whole and in order once
// it reads again, on WebSocket and on SSE, in both I/O modes: pooled, a batch the kernel
// takes only part of is finished off the pool (the writer's WriteRest) while the next
// frames queue up.

// smallSendBuffers hands out accepted connections whose kernel send buffer is small, so
// that a write of a few KiB is not taken whole while the client doesn't read.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(4096)
	}
	return c, err
}

// smallReceiveBuffer dials with a small receive buffer from the start, so that the window
// the client offers stays small.
var smallReceiveBuffer = &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
	rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	return nil
}}

// stalledFrames is how many frames of stalledPad a stalled client is sent: more than the
// kernel's buffers hold, in batches small enough for a pool worker to try.
const stalledFrames = 24

var stalledPad = strings.Repeat("x", 1000)

// serveModes runs test in both I/O modes against the handler newHandler makes, on a server
// whose connections have small send buffers; t gets the fake sessions and the address.
func serveModes(t *testing.T, newHandler func(transport.Config) http.Handler, test func(t *testing.T, fake *fakeSessions, hs *httptest.Server)) {
	for _, mode := range []transport.IOMode{transport.IOPooled, transport.IOPlain} {
		t.Run(mode.String(), func(t *testing.T) {
			fake := newFakeSessions()
			var streams sync.WaitGroup
			hs := httptest.NewUnstartedServer(newHandler(transport.Config{Manager: fake,
				Observer: &countingObserver{}, Streams: &streams, IO: mode, Limiter: transport.NewLimiter(transport.Limits{})}))
			hs.Listener = smallSendBuffers{hs.Listener}
			hs.Start()
			defer func() {
				fake.shutdown()
				hs.CloseClientConnections()
				hs.Close()
				streams.Wait()
			}()
			test(t, fake, hs)
		})
	}
}

// openSSEStream opens the SSE stream of session s1 on hs through d, and returns its body,
// read through a buffer of size bytes; the connection closes when t ends.
func openSSEStream(t *testing.T, d *net.Dialer, hs *httptest.Server, size int) *bufio.Reader {
	t.Helper()
	c, err := d.Dial("tcp", hs.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.Write([]byte("GET /?session=cred:s1 HTTP/1.1\r\nHost: x\r\n\r\n"))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", resp, err)
	}
	return bufio.NewReaderSize(resp.Body, size)
}

// enqueueStalled queues the frames one by one on a, while its client reads nothing.
func enqueueStalled(a *session.Attachment) {
	for i := range stalledFrames {
		a.Enqueue((&session.ServerFrame{T: session.FrameUnsub, Ch: "c" + strconv.Itoa(i), Reason: stalledPad}).Encode())
	}
}

// checkStalled fails t unless frame i is the i-th queued, whole.
func checkStalled(t *testing.T, i int, frame string) {
	t.Helper()
	if want := `"ch":"c` + strconv.Itoa(i) + `"`; !strings.Contains(frame, want) || !strings.Contains(frame, stalledPad) {
		t.Fatalf("frame %d: %.80q, want %s and the whole pad", i, frame, want)
	}
}

func TestWebSocketStalledClientGetsEveryFrame(t *testing.T) {
	newWS := func(c transport.Config) http.Handler { return transport.NewWebSocket(c) }
	serveModes(t, newWS, func(t *testing.T, fake *fakeSessions, hs *httptest.Server) {
		d := websocket.Dialer{NetDial: smallReceiveBuffer.Dial}
		c, _, err := d.Dial("ws"+strings.TrimPrefix(hs.URL, "http")+"/?session=cred:w1", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, p, err := c.ReadMessage(); err != nil || !bytes.Contains(p, []byte(`"t":"hello"`)) {
			t.Fatalf("first frame %q %v, want hello", p, err)
		}
		enqueueStalled(fake.attachment("w1"))
		for i := range stalledFrames {
			_, p, err := c.ReadMessage()
			if err != nil {
				t.Fatalf("after %d frames: %v", i, err)
			}
			checkStalled(t, i, string(p))
		}
	})
}

func TestSSEStalledClientGetsEveryEvent(t *testing.T) {
	newSSE := func(c transport.Config) http.Handler { return transport.NewSSE(c) }
	serveModes(t, newSSE, func(t *testing.T, fake *fakeSessions, hs *httptest.Server) {
		br := openSSEStream(t, smallReceiveBuffer, hs, 4096)
		enqueueStalled(fake.attachment("s1"))
		var got []string
		for len(got) < stalledFrames+2 { // the retry hint, hello and the frames
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("after %d events: %v", len(got), err)
			}
			if data, ok := strings.CutPrefix(line, "data: "); ok {
				got = append(got, data)
			} else if strings.HasPrefix(line, "retry: ") {
				got = append(got, line)
			}
		}
		for i, data := range got[2:] {
			checkStalled(t, i, data)
		}
	})
}

// A stream that outlived the write bound while idle still takes the next event: a small
// one (written by a pool worker without waiting, which the runtime fails as well once a
// deadline has passed) and one larger than its writer's buffer (which reaches the
// connection while it is encoded). Every write gets a bound of its own, in both I/O modes.
func TestSSEEventAfterIdle(t *testing.T) {
	const wait = time.Second
	defer transport.SetWriteWait(wait)()
	newSSE := func(c transport.Config) http.Handler { return transport.NewSSE(c) }
	serveModes(t, newSSE, func(t *testing.T, fake *fakeSessions, hs *httptest.Server) {
		br := openSSEStream(t, &net.Dialer{}, hs, 128<<10)
		readData := func() string {
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					t.Fatal(err)
				}
				if data, ok := strings.CutPrefix(line, "data: "); ok {
					return data
				}
			}
		}
		if hello := readData(); !strings.Contains(hello, `"t":"hello"`) {
			t.Fatalf("first event %.80q, want hello", hello)
		}
		for _, size := range []int{100, 48 << 10} {
			time.Sleep(2 * wait) // idle past the bound of the last write: what is under test
			pad := strings.Repeat("y", size)
			fake.attachment("s1").Enqueue((&session.ServerFrame{T: session.FrameUnsub, Ch: "c", Reason: pad}).Encode())
			if data := readData(); !strings.Contains(data, pad) {
				t.Fatalf("the event of %d bytes came cut: %d bytes", size, len(data))
			}
		}
	})
}
