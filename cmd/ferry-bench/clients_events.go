package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// ferryEvents is a dashboard reader: a plain EventSource on GET {base}/events?channel=...
// (PROTOCOL.md §5), with no session and no client library. It is written from the
// protocol's text alone, as a dashboard author would: one GET, then the event stream read
// by the rules of the SSE format (fields, a blank line dispatching the event), which is
// what a browser does.
type ferryEvents struct {
	clientConf
	h  *httpConn
	sr sseReader
}

func (c *ferryEvents) connect(ctx context.Context) error {
	c.h = c.httpConn(ctx, c.rcvbuf)
	resp, err := c.h.Stream(c.e.o.base+"/events?"+url.Values{"channel": {c.channel}}.Encode(), map[string]string{"Accept": "text/event-stream"})
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("events: HTTP %d", resp.StatusCode)
	}
	c.sr.br = bufio.NewReaderSize(resp.Body, 2048)
	// The stream opens with its retry hint, written once the channels are subscribed:
	// from then on every message published is on the way.
	for {
		ev, err := c.sr.next()
		if err != nil {
			return fmt.Errorf("events: before the retry hint: %w", err)
		}
		switch {
		case ev.retry:
			return nil
		case string(ev.name) == "close":
			return fmt.Errorf("closed by server: %s", ev.data)
		}
	}
}

func (c *ferryEvents) read(ctx context.Context, s *stats) error {
	for {
		ev, err := c.sr.next()
		if err != nil {
			return err
		}
		switch string(ev.name) {
		case c.channel:
			s.deliver(&c.cs, ev.data, time.Now())
		case "close":
			return fmt.Errorf("closed by server: %s", ev.data)
		case "reset":
			// History could not cover a gap: what it skipped shows as lost.
			s.fail("events reset", fmt.Errorf("%s", ev.data))
		}
	}
}

func (c *ferryEvents) close() {
	if c.h != nil {
		c.h.Close()
	}
}

// sseEvent is what one step of an sseReader found: a dispatched event (name and data; an
// event without "event:" is named "message"), or a retry field. Its slices are valid until
// the next call.
type sseEvent struct {
	name, data, id []byte
	retry          bool
}

// sseReader reads a text/event-stream by the rules of the SSE format: lines of
// "field: value" (one optional space after the colon), comments starting with ':',
// data lines joined by '\n', and an event dispatched at a blank line when it has data. It
// keeps its buffers from one event to the next: a reader costs no allocation per message.
type sseReader struct {
	br             *bufio.Reader
	name, data, id []byte
	hasData        bool
	long           []byte // a line longer than br's buffer, put together
}

// line returns the next line, with its end; the slice is valid until the next call.
func (r *sseReader) line() ([]byte, error) {
	line, err := r.br.ReadSlice('\n')
	if err != bufio.ErrBufferFull {
		return line, err
	}
	r.long = append(r.long[:0], line...)
	for err == bufio.ErrBufferFull {
		line, err = r.br.ReadSlice('\n')
		r.long = append(r.long, line...)
	}
	return r.long, err
}

// next returns the next event, or the retry field as soon as it is read, so that a
// client knows when the stream's preamble is over.
func (r *sseReader) next() (sseEvent, error) {
	for {
		line, err := r.line()
		if err != nil {
			return sseEvent{}, err
		}
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		if len(line) == 0 {
			if !r.hasData {
				r.name = r.name[:0]
				continue
			}
			ev := sseEvent{name: r.name, data: r.data, id: r.id}
			if len(ev.name) == 0 {
				ev.name = []byte("message")
			}
			r.name, r.data, r.hasData = r.name[:0], r.data[:0], false
			return ev, nil
		}
		if line[0] == ':' {
			continue // a comment: a heartbeat
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "event":
			r.name = append(r.name[:0], value...)
		case "data":
			if r.hasData {
				r.data = append(r.data, '\n')
			}
			r.data = append(r.data, value...)
			r.hasData = true
		case "id":
			// The last event id persists across events, as a browser's Last-Event-ID does.
			r.id = append(r.id[:0], value...)
		case "retry":
			return sseEvent{retry: true, data: value}, nil
		}
	}
}
