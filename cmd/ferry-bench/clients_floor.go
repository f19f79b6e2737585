package main

import (
	"context"
	"time"
)

// The client of the floor (bench/gorilla-floor): the least a Go WebSocket broadcast
// server does with gorilla/websocket, with nothing of what Ferry adds.

// floorWS is a client of bench/gorilla-floor: a bare WebSocket whose messages are the
// published payloads as they are.
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
		s.deliver(&c.cs, b, time.Now())
	}
}

func (c *floorWS) close() { c.ws.close() }
