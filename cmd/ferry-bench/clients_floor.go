package main

import (
	"bytes"
	"context"
	"time"
)

// The client of the floor (bench/gorilla-floor): the strongest plain gorilla/websocket
// broadcast server, with nothing of what Ferry adds. It joins the messages pending
// together into one text frame, one message a line.

// floorWS is a client of bench/gorilla-floor: a bare WebSocket whose frames are
// published payloads, one or more, separated by newlines.
type floorWS struct {
	clientConf
	ws *wsConn
	cs seqState
}

func (c *floorWS) connect(ctx context.Context) error {
	var err error
	c.ws, err = dialWS(ctx, c.wsDialer(), "ws://"+c.e.u.Host+"/ws")
	return err
}

func (c *floorWS) read(ctx context.Context, s *stats) error {
	for {
		b, err := c.ws.next()
		if err != nil {
			return err
		}
		deliverLines(s, &c.cs, b, time.Now())
	}
}

func (c *floorWS) close() { c.ws.close() }

// deliverLines records each message of a floor frame, all received at now. A payload
// never holds a raw newline (it is compact JSON), so each line is one; an empty line is
// counted as unreadable, like any payload that isn't one.
func deliverLines(s *stats, cs *seqState, frame []byte, now time.Time) {
	for {
		line, rest, more := bytes.Cut(frame, []byte{'\n'})
		s.deliver(cs, line, now)
		if !more || len(rest) == 0 {
			return
		}
		frame = rest
	}
}
