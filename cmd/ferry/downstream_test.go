package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ferryrt/ferry/internal/fclient"
)

// downstream is one attachment of a test client that counts what it receives as
// ferry_frames_out_total and ferry_bytes_out_total count it: every frame, and the bytes
// of the frames' JSON (WebSocket messages, SSE data lines) or of the poll answers.
type downstream struct {
	t      *testing.T
	c      *fclient.Client
	next   func() fclient.Frame // the next frame, polling or reading as the transport does
	send   func(frame string)   // sends an upstream frame as the transport's clients do
	close  func()
	frames int
	bytes  int
	// Long-polling only: polls made, those answered by the hold's timeout (a lone ping),
	// and channels whose position the polls carried (each counts in ferry_resumes_total,
	// since every poll attaches with --poll-linger 0).
	polls, timeouts, resumed int
}

func (d *downstream) count(f fclient.Frame, size int) fclient.Frame {
	d.frames++
	d.bytes += size
	d.c.Track(f)
	return f
}

// attachWebSocket attaches c over WebSocket.
func attachWebSocket(t *testing.T, c *fclient.Client) *downstream {
	s, err := c.WebSocket(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	d := &downstream{t: t, c: c, close: s.Close}
	d.next = d.fromStream(s)
	d.send = func(frame string) {
		if err := s.WriteRaw(websocket.TextMessage, []byte(frame)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(s.Close)
	return d
}

// attachSSE attaches c over SSE.
func attachSSE(t *testing.T, c *fclient.Client) *downstream {
	s, err := c.SSE(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	d := &downstream{t: t, c: c, send: postSend(t, c), close: s.Close}
	d.next = d.fromStream(s)
	t.Cleanup(s.Close)
	return d
}

// fromStream returns a next that reads the frames of s, failing the test if none comes
// within 10 s or the stream ends.
func (d *downstream) fromStream(s *fclient.Stream) func() fclient.Frame {
	return func() fclient.Frame {
		d.t.Helper()
		select {
		case f, ok := <-s.Frames:
			if !ok {
				d.t.Fatalf("stream ended: %v", s.Err())
			}
			return d.count(f, f.Size)
		case <-time.After(10 * time.Second):
			d.t.Fatal("no frame within 10s")
			return fclient.Frame{}
		}
	}
}

// attachLongPoll returns a downstream that polls whenever it has no frame left, the
// first time with hello=1. Every poll belongs to one attachment.
func attachLongPoll(t *testing.T, c *fclient.Client) *downstream {
	d := &downstream{t: t, c: c, send: postSend(t, c), close: func() {}}
	c.NextAttachment()
	var queue []fclient.Frame
	d.next = func() fclient.Frame {
		t.Helper()
		for len(queue) == 0 {
			for _, e := range strings.Split(c.Cursor(), ",") {
				if !strings.HasSuffix(e, "=") {
					d.resumed++
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			a, err := c.PollAnswer(ctx, d.polls == 0, 10*time.Second)
			cancel()
			d.polls++
			if err != nil || a.Superseded {
				t.Fatalf("poll: %+v %v", a, err)
			}
			if len(a.Frames) == 1 && a.Frames[0].T == "ping" {
				d.timeouts++
			}
			d.bytes += a.Bytes
			queue = a.Frames
		}
		f := queue[0]
		queue = queue[1:]
		return d.count(f, 0) // the answer's bytes are counted whole
	}
	return d
}

// postSend returns a function that POSTs one upstream frame for c, as SSE and long-poll
// clients send.
func postSend(t *testing.T, c *fclient.Client) func(string) {
	return func(frame string) {
		if _, err := c.Send(context.Background(), json.RawMessage(frame)); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
}
