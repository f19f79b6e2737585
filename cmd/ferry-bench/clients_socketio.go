package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// The clients of Socket.IO 4 (Engine.IO v4, Socket.IO v5), the peer the benchmarks
// compare Ferry with.
//
// Engine.IO packets are a type digit and data: 0 open (JSON handshake with sid), 1 close,
// 2 ping, 3 pong, 4 message, 6 noop. Socket.IO packets travel inside message packets:
// "40" connects the main namespace (answered by "40{"sid":...}"), "42[event, data]" is an
// event, "41" a disconnect. In v4 the server pings and the client answers each ping.
// Over polling, packets in one body are separated by the record separator 0x1e.

const sioPath = "/socket.io/?EIO=4&transport="

type sioWS struct {
	clientConf
	ws *wsConn
}

func (c *sioWS) connect(ctx context.Context) error {
	var err error
	c.ws, err = dialWS(ctx, c.wsDialer(), "ws://"+c.u.Host+sioPath+"websocket")
	if err != nil {
		return err
	}
	b, err := c.ws.next()
	if err != nil {
		return err
	}
	if len(b) == 0 || b[0] != '0' {
		return fmt.Errorf("engine.io: want an open packet, got %.100q", b)
	}
	if err := c.ws.c.WriteMessage(websocket.TextMessage, []byte("40")); err != nil {
		return err
	}
	for {
		b, err := c.ws.next()
		if err != nil {
			return err
		}
		switch {
		case bytes.HasPrefix(b, []byte("40")):
			return nil
		case bytes.HasPrefix(b, []byte("44")):
			return fmt.Errorf("socket.io: connect refused: %.100s", b)
		case bytes.Equal(b, []byte("2")):
			if err := c.ws.c.WriteMessage(websocket.TextMessage, []byte("3")); err != nil {
				return err
			}
		}
	}
}

func (c *sioWS) read(ctx context.Context, s *stats) error {
	for {
		b, err := c.ws.next()
		if err != nil {
			return err
		}
		switch {
		case bytes.HasPrefix(b, []byte("42")):
			s.deliver(&c.cs, b[2:], time.Now())
		case bytes.Equal(b, []byte("2")):
			if err := c.ws.c.WriteMessage(websocket.TextMessage, []byte("3")); err != nil {
				return err
			}
		case bytes.HasPrefix(b, []byte("41")), bytes.HasPrefix(b, []byte("1")):
			return errors.New("socket.io: disconnected by server")
		}
	}
}

func (c *sioWS) close() { c.ws.close() }

type sioPoll struct {
	clientConf
	h   *httpConn
	sid string
}

// get performs one polling GET and returns its packets.
func (c *sioPoll) get() ([][]byte, error) {
	path := sioPath + "polling"
	if c.sid != "" {
		path += "&sid=" + url.QueryEscape(c.sid)
	}
	// pingInterval (25 s) bounds how long the server holds a GET.
	status, b, err := c.h.Do(http.MethodGet, path, nil, nil, time.Now().Add(60*time.Second))
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("engine.io: GET: HTTP %d: %.200s", status, b)
	}
	return bytes.Split(b, []byte{0x1e}), nil
}

// post sends packets in one POST.
func (c *sioPoll) post(packets ...string) error {
	body := []byte(strings.Join(packets, "\x1e"))
	status, b, err := c.h.Do(http.MethodPost, sioPath+"polling&sid="+url.QueryEscape(c.sid),
		map[string]string{"Content-Type": "text/plain;charset=UTF-8"}, body, time.Now().Add(30*time.Second))
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("engine.io: POST: HTTP %d: %.200s", status, b)
	}
	return nil
}

func (c *sioPoll) connect(ctx context.Context) error {
	c.h = c.httpConn(ctx, c.rcvbuf)
	packets, err := c.get()
	if err != nil {
		return err
	}
	if len(packets) == 0 || len(packets[0]) == 0 || packets[0][0] != '0' {
		return fmt.Errorf("engine.io: want an open packet, got %.100q", packets)
	}
	var open struct {
		SID string `json:"sid"`
	}
	if err := json.Unmarshal(packets[0][1:], &open); err != nil || open.SID == "" {
		return fmt.Errorf("engine.io: bad open packet %.100q", packets[0])
	}
	c.sid = open.SID
	if err := c.post("40"); err != nil {
		return err
	}
	for {
		packets, err := c.get()
		if err != nil {
			return err
		}
		for _, p := range packets {
			if bytes.HasPrefix(p, []byte("40")) {
				return c.handle(packets, nil)
			}
			if bytes.HasPrefix(p, []byte("44")) {
				return fmt.Errorf("socket.io: connect refused: %.100s", p)
			}
		}
		if err := c.handle(packets, nil); err != nil {
			return err
		}
	}
}

// handle answers pings and delivers events (s nil: during connect, events are not
// expected and not counted).
func (c *sioPoll) handle(packets [][]byte, s *stats) error {
	now := time.Now()
	pong := false
	for _, p := range packets {
		switch {
		case bytes.HasPrefix(p, []byte("42")):
			if s != nil {
				s.deliver(&c.cs, p[2:], now)
			}
		case bytes.Equal(p, []byte("2")):
			pong = true
		case bytes.HasPrefix(p, []byte("41")), bytes.Equal(p, []byte("1")):
			return errors.New("socket.io: disconnected by server")
		}
	}
	if pong {
		return c.post("3")
	}
	return nil
}

func (c *sioPoll) read(ctx context.Context, s *stats) error {
	for {
		packets, err := c.get()
		if err != nil {
			return err
		}
		if err := c.handle(packets, s); err != nil {
			return err
		}
	}
}

func (c *sioPoll) close() {
	if c.h != nil {
		c.h.Close()
	}
}
