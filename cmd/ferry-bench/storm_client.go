package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// stormEnv is what the clients of a storm share.
type stormEnv struct {
	o      *options
	hosts  []string // host:port of every node
	d      *dialer
	wsDial websocket.Dialer
}

// stormClient is one session that behaves as client-js does after a loss: a connection
// round (negotiate with its credential, which resumes the session, then attach with its
// position) after a full-jitter backoff of 250 ms doubling up to 15 s, or up to 2 s after
// a 4003 (the node is restarting). On 4005 it gets a new session and keeps its position.
// It follows one channel and checks every message against its position: a reset is
// counted as such, any other jump as a silent gap.
type stormClient struct {
	e    *stormEnv
	id   int
	tr   string
	node int // node of the current round

	// Owned by the client's goroutine.
	cred     string
	attempt  int
	shutdown bool // the last loss was a 4003

	mu sync.Mutex // guards what follows, read by the scenario
	st stormState
}

// stormState is a client's position and counts.
type stormState struct {
	ep        string
	off       uint64
	live      bool      // attached: hello and sub (or reset) arrived, not ended since
	node      int       // node of the last attachment
	brokeAt   time.Time // first loss since the storm began (zero: none)
	backAt    time.Time // first attachment after brokeAt
	resets    int
	gaps      uint64 // messages skipped without a reset
	dups      uint64 // messages delivered twice
	msgs      uint64
	sessions  int // new sessions after the first (the old one was unknown)
	refused   int // rounds refused with a status or close code (429, 503, 4029, ...)
	connFails int // rounds that failed to connect at all
}

// errClosed is an attachment that the server ended with a close code.
type errClosed struct{ code int }

func (e *errClosed) Error() string { return fmt.Sprintf("closed with %d", e.code) }

func (c *stormClient) snapshot() stormState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st
}

// resetStorm starts counting a new storm.
func (c *stormClient) resetStorm() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.brokeAt, c.st.backAt = time.Time{}, time.Time{}
	c.st.resets, c.st.gaps, c.st.dups, c.st.sessions, c.st.refused, c.st.connFails = 0, 0, 0, 0, 0, 0
}

func (c *stormClient) cursor() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	pos := ""
	if c.st.ep != "" {
		pos = c.st.ep + "." + strconv.FormatUint(c.st.off, 10)
	}
	return c.e.o.channel + "=" + pos
}

// run keeps the client connected until ctx is done. ready is called at its first
// attachment.
func (c *stormClient) run(ctx context.Context, ready func()) {
	rnd := rand.New(rand.NewPCG(uint64(c.id), uint64(time.Now().UnixNano())))
	c.node = c.id % len(c.e.hosts)
	for ctx.Err() == nil {
		err := c.round(ctx, ready)
		if ctx.Err() != nil {
			return
		}
		c.lost(err)
		// The next round goes to any node, as behind a round-robin balancer.
		c.node = rnd.IntN(len(c.e.hosts))
		max := 15 * time.Second
		if c.shutdown {
			max = 2 * time.Second
		}
		window := min(max, 250*time.Millisecond<<min(c.attempt, 10))
		c.attempt++
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(rnd.Int64N(int64(window) + 1))):
		}
	}
}

// lost records the end of an attachment or a failed round.
func (c *stormClient) lost(err error) {
	var ec *errClosed
	code := 0
	if errors.As(err, &ec) {
		code = ec.code
	}
	c.shutdown = code == 4003
	if code == 4005 {
		c.cred = "" // a new session, same position
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st.live {
		c.st.live = false
		if c.st.brokeAt.IsZero() {
			c.st.brokeAt = time.Now()
		}
	} else if code != 0 && code != 4003 && code != 4005 {
		c.st.refused++
	} else if code == 0 {
		c.st.connFails++
	}
}

// attached records a live attachment.
func (c *stormClient) attached() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.live, c.st.node = true, c.node
	if !c.st.brokeAt.IsZero() && c.st.backAt.IsZero() {
		c.st.backAt = time.Now()
	}
}

// carriedOver records a poll that found its connection closed by a restart and was
// answered on a new one: the client lost its connection (it is part of the storm) without
// losing its attachment, as a browser's fetch retries a GET on a closed kept-alive
// connection without telling the page.
func (c *stormClient) carriedOver() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st.live && c.st.brokeAt.IsZero() {
		c.st.brokeAt = time.Now()
		c.st.backAt = c.st.brokeAt
	}
}

// round negotiates (resuming the session when it has one) and attaches, until the
// attachment ends.
func (c *stormClient) round(ctx context.Context, ready func()) error {
	h := newHTTPConn(ctx, c.e.d, &url.URL{Scheme: "http", Host: c.e.hosts[c.node]}, nil, 0)
	defer h.Close()
	if err := c.negotiate(h); err != nil {
		return err
	}
	onLive := func() {
		c.attached()
		c.attempt = 0
		if ready != nil {
			ready()
			ready = nil
		}
	}
	q := url.Values{"session": {c.cred}}
	switch c.tr {
	case "websocket":
		h.Close()
		q.Set("cursor", c.cursor())
		return c.websocket(ctx, "ws://"+c.e.hosts[c.node]+c.e.o.base+"/ws?"+q.Encode(), onLive)
	case "sse":
		q.Set("cursor", c.cursor())
		return c.sse(h, c.e.o.base+"/sse?"+q.Encode(), onLive)
	default:
		return c.longpoll(h, onLive)
	}
}

func (c *stormClient) negotiate(h *httpConn) error {
	body := []byte("{}")
	had := c.cred != ""
	if had {
		body, _ = json.Marshal(map[string]string{"session": c.cred})
	}
	status, b, err := h.Do(http.MethodPost, c.e.o.base+"/negotiate", map[string]string{"Content-Type": "application/json"}, body, time.Now().Add(10*time.Second))
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return httpClosed(status, b)
	}
	var n struct {
		Session string `json:"session"`
		Resumed bool   `json:"resumed"`
	}
	if err := json.Unmarshal(b, &n); err != nil || n.Session == "" {
		return fmt.Errorf("negotiate: bad answer %.200q", b)
	}
	if !n.Resumed && (had || c.snapshot().ep != "") {
		c.mu.Lock()
		c.st.sessions++
		c.mu.Unlock()
	}
	c.cred = n.Session
	return nil
}

// httpClosed turns an HTTP error answer into the close code it carries.
func httpClosed(status int, b []byte) error {
	var e struct {
		Code int `json:"code"`
	}
	if json.Unmarshal(b, &e); e.Code == 0 {
		e.Code = status
	}
	return &errClosed{e.Code}
}

// frame handles one server frame; live is called at the sub or reset of the channel.
func (c *stormClient) frame(b []byte, live func()) error {
	if ep, off, _, ok := msgFrame(b); ok {
		c.msg(ep, off)
		return nil
	}
	var f struct {
		T    string `json:"t"`
		Ch   string `json:"ch"`
		Ep   string `json:"ep"`
		Off  uint64 `json:"off"`
		Code int    `json:"code"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("bad frame %.100q", b)
	}
	switch f.T {
	case "sub", "reset":
		if f.Ch != c.e.o.channel {
			return nil
		}
		c.mu.Lock()
		if f.T == "reset" {
			c.st.resets++
		} else if c.st.ep != "" && (f.Ep != c.st.ep || f.Off != c.st.off) {
			c.st.gaps++ // a sub must continue from the position asked for
		}
		c.st.ep, c.st.off = f.Ep, f.Off
		c.mu.Unlock()
		live()
	case "close", "unsub":
		return &errClosed{f.Code}
	}
	return nil
}

func (c *stormClient) msg(ep string, off uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.msgs++
	switch {
	case ep != c.st.ep:
		c.st.gaps++ // another epoch without a reset
	case off <= c.st.off:
		c.st.dups++
		return
	case off > c.st.off+1:
		c.st.gaps += off - c.st.off - 1
	}
	c.st.ep, c.st.off = ep, off
}

func (c *stormClient) websocket(ctx context.Context, u string, live func()) error {
	d := c.e.wsDial
	ws, err := dialWS(ctx, &d, u)
	if err != nil {
		return err
	}
	defer ws.close()
	for {
		b, err := ws.next()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return &errClosed{ce.Code}
			}
			return err
		}
		if err := c.frame(b, live); err != nil {
			return err
		}
	}
}

func (c *stormClient) sse(h *httpConn, pathQuery string, live func()) error {
	resp, err := h.Stream(pathQuery, map[string]string{"Accept": "text/event-stream"})
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return &errClosed{resp.StatusCode}
	}
	br := bufio.NewReaderSize(resp.Body, 2048)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if d, ok := bytes.CutPrefix(line, []byte("data: ")); ok {
			if err := c.frame(bytes.TrimRight(d, "\r\n"), live); err != nil {
				return err
			}
		}
	}
}

func (c *stormClient) longpoll(h *httpConn, live func()) error {
	hello := true
	for {
		q := url.Values{"session": {c.cred}, "cursor": {c.cursor()}}
		if hello {
			q.Set("hello", "1")
		}
		redials := h.redials
		status, b, err := h.Do(http.MethodGet, c.e.o.base+"/poll?"+q.Encode(), nil, nil, time.Now().Add(40*time.Second))
		if err != nil {
			return err
		}
		if status == http.StatusNoContent {
			continue
		}
		if status != http.StatusOK {
			return httpClosed(status, b)
		}
		frames, err := splitFrames(b)
		if err != nil {
			return err
		}
		for _, f := range frames {
			if err := c.frame(f, live); err != nil {
				return err
			}
		}
		if h.redials != redials {
			c.carriedOver()
		}
		hello = false
	}
}
