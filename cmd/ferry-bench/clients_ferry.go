package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// The clients of Ferry itself, one per transport: WebSocket, SSE and long-polling.

// negotiate creates a Ferry session and returns its credential.
func negotiate(h *httpConn, base string) (string, error) {
	status, b, err := h.Do(http.MethodPost, base+"/negotiate", map[string]string{"Content-Type": "application/json"}, []byte("{}"), time.Now().Add(10*time.Second))
	if err != nil {
		return "", fmt.Errorf("negotiate: %w", err)
	}
	if status != http.StatusOK {
		return "", fmt.Errorf("negotiate: HTTP %d: %.200s", status, b)
	}
	var n struct {
		Session string `json:"session"`
	}
	if err := json.Unmarshal(b, &n); err != nil || n.Session == "" {
		return "", fmt.Errorf("negotiate: bad answer %.200q", b)
	}
	return n.Session, nil
}

func (e *env) ferryQuery(cred, cursor string) string {
	return url.Values{"session": {cred}, "cursor": {cursor}}.Encode()
}

// frameType returns the t field of a Ferry server frame, which always comes first.
func frameType(b []byte) string {
	const prefix = `{"t":"`
	if !bytes.HasPrefix(b, []byte(prefix)) {
		return ""
	}
	b = b[len(prefix):]
	if i := bytes.IndexByte(b, '"'); i >= 0 {
		return string(b[:i])
	}
	return ""
}

// ferryPayload returns the d field and beyond of a msg frame.
func ferryPayload(b []byte) []byte {
	if i := bytes.Index(b, []byte(`"d":`)); i >= 0 {
		return b[i+4:]
	}
	return b
}

// closeError reports a Ferry close frame.
func closeError(b []byte) error {
	var f struct {
		Code   int    `json:"code"`
		Reason string `json:"reason"`
	}
	json.Unmarshal(b, &f)
	return fmt.Errorf("closed by server: %d %s", f.Code, f.Reason)
}

type ferryWS struct {
	clientConf
	ws *wsConn
}

func (c *ferryWS) connect(ctx context.Context) error {
	h := c.httpConn(ctx, 0)
	cred, err := negotiate(h, c.e.o.base)
	h.Close()
	if err != nil {
		return err
	}
	u := "ws://" + c.u.Host + c.e.o.base + "/ws?" + c.e.ferryQuery(cred, c.channel+"=")
	c.ws, err = dialWS(ctx, c.wsDialer(), u)
	if err != nil {
		return err
	}
	// hello, then sub: the subscription is live.
	for {
		b, err := c.ws.next()
		if err != nil {
			return err
		}
		switch frameType(b) {
		case "sub":
			return nil
		case "close", "unsub":
			return closeError(b)
		}
	}
}

func (c *ferryWS) read(ctx context.Context, s *stats) error {
	for {
		b, err := c.ws.next()
		if err != nil {
			return err
		}
		switch frameType(b) {
		case "msg":
			s.deliver(&c.cs, ferryPayload(b), time.Now())
		case "close":
			return closeError(b)
		}
	}
}

func (c *ferryWS) close() { c.ws.close() }

type ferrySSE struct {
	clientConf
	h    *httpConn
	br   *bufio.Reader
	body io.Closer
}

func (c *ferrySSE) connect(ctx context.Context) error {
	c.h = c.httpConn(ctx, c.rcvbuf)
	cred, err := negotiate(c.h, c.e.o.base)
	if err != nil {
		return err
	}
	resp, err := c.h.Stream(c.e.o.base+"/sse?"+c.e.ferryQuery(cred, c.channel+"="), map[string]string{"Accept": "text/event-stream"})
	if err != nil {
		return fmt.Errorf("sse: %w", err)
	}
	c.body = resp.Body
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("sse: HTTP %d", resp.StatusCode)
	}
	c.br = bufio.NewReaderSize(resp.Body, 2048)
	for {
		b, err := c.data()
		if err != nil {
			return err
		}
		switch frameType(b) {
		case "sub":
			return nil
		case "close", "unsub":
			return closeError(b)
		}
	}
}

// data returns the next data line of the stream, without "data: " and the newline.
// Ferry writes every frame on one data line.
func (c *ferrySSE) data() ([]byte, error) {
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return nil, err
		}
		if d, ok := bytes.CutPrefix(line, []byte("data: ")); ok {
			return bytes.TrimRight(d, "\r\n"), nil
		}
	}
}

func (c *ferrySSE) read(ctx context.Context, s *stats) error {
	for {
		b, err := c.data()
		if err != nil {
			return err
		}
		switch frameType(b) {
		case "msg":
			s.deliver(&c.cs, ferryPayload(b), time.Now())
		case "close":
			return closeError(b)
		}
	}
}

func (c *ferrySSE) close() {
	if c.h != nil {
		c.h.Close()
	}
}

type ferryPoll struct {
	clientConf
	h    *httpConn
	cred string
	pos  string // epoch.offset of the last frame
	// query is the start of every poll's path and query, up to the cursor's value.
	query string
}

type pollFrame struct {
	T      string          `json:"t"`
	Ep     string          `json:"ep"`
	Off    uint64          `json:"off"`
	D      json.RawMessage `json:"d"`
	Code   int             `json:"code"`
	Reason string          `json:"reason"`
}

func (c *ferryPoll) poll(hello bool) ([]pollFrame, error) {
	if c.query == "" {
		c.query = c.e.o.base + "/poll?session=" + url.QueryEscape(c.cred) + "&cursor="
	}
	q := c.query + url.QueryEscape(c.channel+"="+c.pos)
	if hello {
		q += "&hello=1"
	}
	// The server holds a poll for --poll-hold (25 s by default).
	status, b, err := c.h.Do(http.MethodGet, q, nil, nil, time.Now().Add(40*time.Second))
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("poll: HTTP %d: %.200s", status, b)
	}
	raw, err := splitFrames(b)
	if err != nil {
		return nil, fmt.Errorf("poll: bad answer: %w", err)
	}
	frames := make([]pollFrame, 0, len(raw))
	for _, r := range raw {
		var f pollFrame
		if ep, off, d, ok := msgFrame(r); ok {
			// The common case, read without reflection: the generator must cost as little
			// per delivery as Socket.IO's, whose packets need no JSON decoding here either.
			f = pollFrame{T: "msg", Ep: ep, Off: off, D: d}
		} else if err := json.Unmarshal(r, &f); err != nil {
			return nil, fmt.Errorf("poll: bad frame %.100s: %w", r, err)
		}
		switch f.T {
		case "sub", "reset", "msg":
			c.pos = f.Ep + "." + strconv.FormatUint(f.Off, 10)
		case "close", "unsub":
			return nil, fmt.Errorf("closed by server: %d %s", f.Code, f.Reason)
		}
		frames = append(frames, f)
	}
	return frames, nil
}

// splitFrames returns the elements of a poll answer, {"frames":[...]}, without decoding
// them.
func splitFrames(b []byte) ([][]byte, error) {
	const head, tail = `{"frames":[`, `]}`
	b = bytes.TrimRight(b, " \r\n")
	if !bytes.HasPrefix(b, []byte(head)) || !bytes.HasSuffix(b, []byte(tail)) {
		return nil, fmt.Errorf("not a frames object: %.100q", b)
	}
	b = b[len(head) : len(b)-len(tail)]
	var out [][]byte
	depth, start, inStr, esc := 0, 0, false, false
	for i, c := range b {
		switch {
		case inStr:
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inStr = false
			}
		case c == '"':
			inStr = true
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			depth--
			if depth < 0 {
				return nil, errors.New("unbalanced frames")
			}
		case c == ',' && depth == 0:
			out = append(out, b[start:i])
			start = i + 1
		}
	}
	if depth != 0 || inStr {
		return nil, errors.New("unbalanced frames")
	}
	if start < len(b) {
		out = append(out, b[start:])
	}
	return out, nil
}

// msgFrame reads a msg frame as the server encodes it:
// {"t":"msg","ch":"<channel>","ep":"<epoch>","off":<offset>,"d":<payload>}.
func msgFrame(b []byte) (ep string, off uint64, d []byte, ok bool) {
	rest, found := bytes.CutPrefix(b, []byte(`{"t":"msg","ch":"`))
	if !found {
		return "", 0, nil, false
	}
	_, rest, found = bytes.Cut(rest, []byte(`","ep":"`))
	if !found {
		return "", 0, nil, false
	}
	e, rest, found := bytes.Cut(rest, []byte(`","off":`))
	if !found {
		return "", 0, nil, false
	}
	o, rest, found := bytes.Cut(rest, []byte(`,"d":`))
	if !found || len(rest) == 0 || rest[len(rest)-1] != '}' {
		return "", 0, nil, false
	}
	n, err := strconv.ParseUint(string(o), 10, 64)
	if err != nil {
		return "", 0, nil, false
	}
	return string(e), n, rest[:len(rest)-1], true
}

func (c *ferryPoll) connect(ctx context.Context) error {
	c.h = c.httpConn(ctx, c.rcvbuf)
	var err error
	if c.cred, err = negotiate(c.h, c.e.o.base); err != nil {
		return err
	}
	frames, err := c.poll(true)
	if err != nil {
		return err
	}
	for _, f := range frames {
		if f.T == "sub" {
			return nil
		}
	}
	return errors.New("poll: first poll brought no sub frame")
}

func (c *ferryPoll) read(ctx context.Context, s *stats) error {
	for {
		frames, err := c.poll(false)
		if err != nil {
			return err
		}
		now := time.Now()
		for _, f := range frames {
			if f.T == "msg" {
				s.deliver(&c.cs, f.D, now)
			}
		}
	}
}

func (c *ferryPoll) close() {
	if c.h != nil {
		c.h.Close()
	}
}
