package transport_test

import (
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ferryrt/ferry/session"
	"github.com/ferryrt/ferry/transport"
)

// A pong the server writes for a client's ping sets the connection's write deadline
// (gorilla's WriteControl), and the runtime fails every later write once that deadline
// has passed, the pooled writer's non-blocking ones included. Data sent after it must
// still arrive, in both I/O modes.
func TestWebSocketWritesAfterPongDeadline(t *testing.T) {
	for _, mode := range []transport.IOMode{transport.IOPooled, transport.IOPlain} {
		t.Run(mode.String(), func(t *testing.T) {
			const wait = 100 * time.Millisecond
			defer transport.SetWriteWait(wait)()
			ts := newTestServer(t, func(c *transport.Config) { c.IO = mode })
			wsURL := "ws" + strings.TrimPrefix(ts.URL, "http") + "/ferry/ws?session=cred:s1"
			c, resp, err := websocket.DefaultDialer.Dial(wsURL, nil)
			if err != nil {
				t.Fatalf("dial: %v %v", err, resp)
			}
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(10 * time.Second)) // a failure guard only
			pong := make(chan struct{}, 1)
			c.SetPongHandler(func(string) error { pong <- struct{}{}; return nil })
			frames := make(chan session.ServerFrame, 8)
			go func() {
				defer close(frames)
				for {
					var f session.ServerFrame
					if err := c.ReadJSON(&f); err != nil {
						return
					}
					frames <- f
				}
			}()
			if f := <-frames; f.T != session.FrameHello {
				t.Fatalf("first frame %+v, want hello", f)
			}
			if err := c.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(time.Second)); err != nil {
				t.Fatal(err)
			}
			<-pong
			pongAt := time.Now()
			// The subject is a deadline passing, which no event announces: the server set
			// it a writeWait after a moment before it wrote the pong, so it has passed
			// once a writeWait has since the pong arrived. This waits exactly that long.
			time.Sleep(time.Until(pongAt.Add(wait)))
			// A small frame goes out with a non-blocking write on the pool; one larger
			// than a try (32 KiB) with a blocking write off it.
			// Each is sent once the one before has arrived, so that each goes its own way.
			a := ts.fake.attachment("s1")
			for _, want := range []int{len("small"), 40 << 10} {
				a.Enqueue((&session.ServerFrame{T: session.FrameUnsub, Ch: strings.Repeat("s", want)}).Encode())
				f, ok := <-frames
				if !ok || f.T != session.FrameUnsub || len(f.Ch) != want {
					t.Fatalf("after the pong's deadline: frame %q of a %d-byte channel (open %v), want unsub of a %d-byte one", f.T, len(f.Ch), ok, want)
				}
			}
		})
	}
}
