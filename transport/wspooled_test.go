//go:build unix

package transport_test

import (
	"bytes"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/ferryrt/ferry/session"
	"github.com/ferryrt/ferry/transport"
)

// A WebSocket client that stops reading gets its frames whole and in order once it reads
// again, in both I/O modes: pooled, a corked batch the kernel takes only part of is
// finished off the pool (the writer's WriteRest) while the next frames queue up.
func TestWebSocketStalledClientGetsEveryFrame(t *testing.T) {
	for _, mode := range []transport.IOMode{transport.IOPooled, transport.IOPlain} {
		t.Run(mode.String(), func(t *testing.T) {
			fake := newFakeSessions()
			var streams sync.WaitGroup
			hs := httptest.NewUnstartedServer(transport.NewWebSocket(transport.Config{Manager: fake,
				Observer: &countingObserver{}, Streams: &streams, IO: mode, Limiter: transport.NewLimiter(transport.Limits{})}))
			hs.Listener = smallSendBuffers{hs.Listener}
			hs.Start()
			defer func() {
				fake.shutdown()
				hs.CloseClientConnections()
				hs.Close()
				streams.Wait()
			}()
			d := websocket.Dialer{NetDial: smallReceiveBuffer.Dial}
			c, _, err := d.Dial("ws"+strings.TrimPrefix(hs.URL, "http")+"/?session=cred:w1", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, p, err := c.ReadMessage(); err != nil || !bytes.Contains(p, []byte(`"t":"hello"`)) {
				t.Fatalf("first frame %q %v, want hello", p, err)
			}
			a := fake.attachment("w1")
			// 24 frames of 1 KiB, queued one by one while the client reads nothing: more
			// than the kernel's buffers hold, in batches small enough for a pool worker to try.
			pad := strings.Repeat("x", 1000)
			const frames = 24
			for i := range frames {
				a.Enqueue((&session.ServerFrame{T: session.FrameUnsub, Ch: "c" + strconv.Itoa(i), Reason: pad}).Encode())
			}
			for i := range frames {
				_, p, err := c.ReadMessage()
				if err != nil {
					t.Fatalf("after %d frames: %v", i, err)
				}
				if want := `"ch":"c` + strconv.Itoa(i) + `"`; !strings.Contains(string(p), want) || !strings.Contains(string(p), pad) {
					t.Fatalf("frame %d: %.80q, want %s and the whole pad", i, p, want)
				}
			}
		})
	}
}
