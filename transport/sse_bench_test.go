package transport_test

import (
	"bufio"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"

	"github.com/ferryrt/ferry/session"
	"github.com/ferryrt/ferry/transport"
)

// BenchmarkSSEWake is the wake→write path of /sse: a frame queued to each of n streams'
// attachments wakes their writers, which encode and write it, and each client reads its
// event. One op is one frame through every stream; the figure to read is ns/event (the
// whole round, divided by the events delivered). Pooled, the writer is a task of the
// transports' writer pool; plain, net/http's handler goroutine waits in Next.
func BenchmarkSSEWake(b *testing.B) {
	for _, mode := range []transport.IOMode{transport.IOPooled, transport.IOPlain} {
		for _, n := range []int{1, 100} {
			b.Run(mode.String()+"/streams="+strconv.Itoa(n), func(b *testing.B) { benchSSEWake(b, mode, n) })
		}
	}
}

func benchSSEWake(b *testing.B, mode transport.IOMode, n int) {
	fake := newFakeSessions()
	var streams sync.WaitGroup
	cfg := transport.Config{Manager: fake, Observer: &countingObserver{}, Streams: &streams, IO: mode,
		Limiter: transport.NewLimiter(transport.Limits{})}
	hs := httptest.NewServer(transport.NewSSE(cfg))
	defer func() {
		fake.shutdown()
		hs.CloseClientConnections()
		hs.Close()
		streams.Wait()
	}()
	type client struct {
		c  net.Conn
		br *bufio.Reader
		a  *session.Attachment
	}
	clients := make([]client, n)
	for i := range clients {
		c, err := net.Dial("tcp", hs.Listener.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		sid := "b" + strconv.Itoa(i)
		if _, err := c.Write([]byte("GET /?session=cred:" + sid + " HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
			b.Fatal(err)
		}
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("stream %d: %v %v", i, resp, err)
		}
		// Through the body: a plain stream's is chunked, a hijacked one's is not.
		body := bufio.NewReader(resp.Body)
		clients[i] = client{c: c, br: body, a: fake.attachment(sid)}
		readEvent(b, body) // the retry hint
		readEvent(b, body) // hello
	}
	frame := session.MessageFrame(&session.Message{Channel: "bench", Pos: session.Position{Epoch: "e1", Offset: 1},
		Data: []byte(`{"p":1,"seq":42,"ts":1700000000000000000,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`)})
	b.ReportAllocs()
	for b.Loop() {
		for _, cl := range clients {
			cl.a.Enqueue(frame)
		}
		for _, cl := range clients {
			readEvent(b, cl.br)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
}

// readEvent reads up to the blank line that ends an event.
func readEvent(b *testing.B, br *bufio.Reader) {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			b.Fatal(err)
		}
		if len(line) == 1 {
			return
		}
	}
}
