//go:build unix

package transport_test

import (
	"bufio"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/ferryrt/ferry/session"
	"github.com/ferryrt/ferry/transport"
)

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

// A stream whose client stops reading gets its batches whole and in order once it reads
// again, in both I/O modes: pooled, a batch the kernel takes only part of is finished off
// the pool (the writer's WriteRest) while the next frames queue up.
func TestSSEStalledClientGetsEveryEvent(t *testing.T) {
	for _, mode := range []transport.IOMode{transport.IOPooled, transport.IOPlain} {
		t.Run(mode.String(), func(t *testing.T) {
			fake := newFakeSessions()
			var streams sync.WaitGroup
			hs := httptest.NewUnstartedServer(transport.NewSSE(transport.Config{Manager: fake,
				Observer: &countingObserver{}, Streams: &streams, IO: mode, Limiter: transport.NewLimiter(transport.Limits{})}))
			hs.Listener = smallSendBuffers{hs.Listener}
			hs.Start()
			defer func() {
				fake.shutdown()
				hs.CloseClientConnections()
				hs.Close()
				streams.Wait()
			}()
			c, err := smallReceiveBuffer.Dial("tcp", hs.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write([]byte("GET /?session=cred:s1 HTTP/1.1\r\nHost: x\r\n\r\n"))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("%v %v", resp, err)
			}
			br := bufio.NewReader(resp.Body)
			a := fake.attachment("s1")
			// 24 frames of 1 KiB, queued one by one while the client reads nothing: more
			// than the kernel's buffers hold, in batches small enough for a pool worker to try.
			pad := strings.Repeat("x", 1000)
			const frames = 24
			for i := range frames {
				a.Enqueue((&session.ServerFrame{T: session.FrameUnsub, Ch: "c" + strconv.Itoa(i), Reason: pad}).Encode())
			}
			var got []string
			for len(got) < frames+2 { // the retry hint, hello and the frames
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
				if want := `"ch":"c` + strconv.Itoa(i) + `"`; !strings.Contains(data, want) || !strings.Contains(data, pad) {
					t.Fatalf("event %d: %.80q, want %s and the whole pad", i, data, want)
				}
			}
		})
	}
}
