// Package fclient is a small Go client of the Ferry protocol for tests and the load
// generator: negotiation, the three transports as streams of decoded frames, and
// upstream POSTs. It does not reconnect or switch by itself: its callers decide, which is
// what tests of the server need.
package fclient

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
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/r3labs/sse/v2"
)

// Frame is a decoded server frame (any type).
type Frame struct {
	T      string          `json:"t"`
	SID    string          `json:"sid,omitempty"`
	Tr     string          `json:"tr,omitempty"`
	Ch     string          `json:"ch,omitempty"`
	Ep     string          `json:"ep,omitempty"`
	Off    uint64          `json:"off,omitempty"`
	D      json.RawMessage `json:"d,omitempty"`
	B      []byte          `json:"b,omitempty"`
	Seq    uint64          `json:"seq,omitempty"`
	TS     int64           `json:"ts,omitempty"`
	HB     int64           `json:"hb,omitempty"`
	Dup    bool            `json:"dup,omitempty"`
	Code   int             `json:"code,omitempty"`
	Reason string          `json:"reason,omitempty"`
	Err    *struct {
		Code   int    `json:"code"`
		Reason string `json:"reason"`
	} `json:"err,omitempty"`
	// EventID is the SSE id of the frame, if any.
	EventID string `json:"-"`
	// Size is how many bytes the frame took on the wire, as the server's
	// ferry_bytes_out_total counts them: the WebSocket message, or the SSE event's data.
	// It is 0 in frames of a long-poll answer, which count whole (Answer.Bytes).
	Size int `json:"-"`
}

// Negotiation is the server's answer to POST /negotiate.
type Negotiation struct {
	Session     string   `json:"session"`
	SID         string   `json:"sid"`
	Resumed     bool     `json:"resumed"`
	Transports  []string `json:"transports"`
	HeartbeatMs int64    `json:"heartbeatMs"`
	PollHoldMs  int64    `json:"pollHoldMs"`
}

// HTTPError is a non-2xx answer with the protocol's error body.
type HTTPError struct {
	Status int
	Code   int    `json:"code"`
	Reason string `json:"reason"`
}

func (e *HTTPError) Error() string { return fmt.Sprintf("HTTP %d: %d %s", e.Status, e.Code, e.Reason) }

// Client is one session. Its cursor follows the frames passed to Track.
type Client struct {
	Base string // e.g. http://127.0.0.1:8080/ferry
	HTTP *http.Client
	// Header is added to every request (Authorization, Origin, ...).
	Header http.Header
	// Dialer dials WebSocket attachments; nil means websocket.DefaultDialer. Set it with
	// HTTP when the server's certificate needs a pool of its own.
	Dialer *websocket.Dialer
	Negotiation

	// Att is the attachment sequence sent as att; NextAttachment increments it.
	Att uint64
	// CID, if set, is the client identity sent at every negotiation: upstream frames are
	// then deduplicated by it across sessions, and NextSeq must keep counting when a new
	// session replaces an expired one.
	CID string

	mu     sync.Mutex
	order  []string
	cursor map[string]string // channel -> "epoch.offset" or ""
	seq    uint64
}

// New returns a client for base with no session yet.
func New(base string) *Client {
	return &Client{Base: strings.TrimRight(base, "/"), HTTP: http.DefaultClient, cursor: map[string]string{}}
}

// Negotiate creates (or, with a session already set, resumes) the session.
func (c *Client) Negotiate(ctx context.Context) error {
	req := map[string]string{}
	if c.Session != "" {
		req["session"] = c.Session
	}
	if c.CID != "" {
		req["cid"] = c.CID
	}
	body, _ := json.Marshal(req)
	var n Negotiation
	if err := c.postJSON(ctx, c.Base+"/negotiate", body, &n); err != nil {
		return err
	}
	c.Negotiation = n
	return nil
}

func (c *Client) do(req *http.Request) (*http.Response, error) {
	for k, v := range c.Header {
		req.Header[k] = v
	}
	return c.HTTP.Do(req)
}

func (c *Client) postJSON(ctx context.Context, u string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return decodeResponse(resp, out)
}

func decodeResponse(resp *http.Response, out any) error {
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return decodeBody(resp.StatusCode, b, out)
}

// decodeBody decodes the body b of an answer with status into out, or returns the
// protocol's error as an *HTTPError.
func decodeBody(status int, b []byte, out any) error {
	if status/100 != 2 {
		e := &HTTPError{Status: status}
		json.Unmarshal(b, e)
		return e
	}
	if out == nil || status == http.StatusNoContent {
		return nil
	}
	return json.Unmarshal(b, out)
}

// Subscribe adds channel to the cursor, from now or after pos ("epoch.offset").
func (c *Client) Subscribe(channel, pos string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.cursor[channel]; !ok {
		c.order = append(c.order, channel)
	}
	c.cursor[channel] = pos
}

// Cursor returns the cursor in the protocol's text form.
func (c *Client) Cursor() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	parts := make([]string, len(c.order))
	for i, ch := range c.order {
		parts[i] = ch + "=" + c.cursor[ch]
	}
	return strings.Join(parts, ",")
}

// Position returns the cursor position of channel.
func (c *Client) Position(channel string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cursor[channel]
}

// Track moves the cursor for a msg, sub or reset frame.
func (c *Client) Track(f Frame) {
	switch f.T {
	case "msg", "sub", "reset":
		c.mu.Lock()
		if _, ok := c.cursor[f.Ch]; ok {
			c.cursor[f.Ch] = f.Ep + "." + strconv.FormatUint(f.Off, 10)
		}
		c.mu.Unlock()
	}
}

// NextSeq returns the next upstream sequence number.
func (c *Client) NextSeq() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	return c.seq
}

// NextAttachment starts a new attachment sequence number, as a client does for each new
// downstream (every poll of one attachment shares it).
func (c *Client) NextAttachment() {
	c.mu.Lock()
	c.Att++
	c.mu.Unlock()
}

func (c *Client) query(extra url.Values) string {
	c.mu.Lock()
	att := c.Att
	c.mu.Unlock()
	q := url.Values{"session": {c.Session}, "cursor": {c.Cursor()}}
	if att > 0 {
		q.Set("att", strconv.FormatUint(att, 10))
	}
	for k, v := range extra {
		q[k] = v
	}
	return q.Encode()
}

// Send POSTs upstream frames and returns their acks.
func (c *Client) Send(ctx context.Context, frames ...any) ([]Frame, error) {
	body, err := json.Marshal(map[string]any{"frames": frames})
	if err != nil {
		return nil, err
	}
	var resp struct {
		Acks []Frame `json:"acks"`
	}
	if err := c.postJSON(ctx, c.Base+"/send?"+url.Values{"session": {c.Session}}.Encode(), body, &resp); err != nil {
		return nil, err
	}
	return resp.Acks, nil
}

// Answer is the server's answer to one long-poll.
type Answer struct {
	Frames []Frame
	// Superseded is set for a 204: a newer poll of the session took this one's place.
	Superseded bool
	// Bytes is the size of the answer's body, which ferry_bytes_out_total counts whole.
	Bytes int
}

// Poll performs one long-poll. superseded is true for a 204 answer.
func (c *Client) Poll(ctx context.Context, hello bool, hold time.Duration) (frames []Frame, superseded bool, err error) {
	a, err := c.PollAnswer(ctx, hello, hold)
	if err != nil {
		return nil, false, err
	}
	return a.Frames, a.Superseded, nil
}

// PollAnswer performs one long-poll, with hello=1 if hello is set, and asks the server
// to hold it for hold if positive (else it holds for its --poll-hold).
func (c *Client) PollAnswer(ctx context.Context, hello bool, hold time.Duration) (*Answer, error) {
	extra := url.Values{}
	if hello {
		extra.Set("hello", "1")
	}
	if hold > 0 {
		extra.Set("hold", strconv.FormatInt(hold.Milliseconds(), 10))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Base+"/poll?"+c.query(extra), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent {
		return &Answer{Superseded: true}, nil
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var body struct {
		Frames []Frame `json:"frames"`
	}
	if err := decodeBody(resp.StatusCode, b, &body); err != nil {
		return nil, err
	}
	return &Answer{Frames: body.Frames, Bytes: len(b)}, nil
}

// Stream is a downstream attachment delivering frames until it ends.
type Stream struct {
	// Frames delivers every frame; it is closed when the attachment ends.
	Frames <-chan Frame
	cancel context.CancelFunc
	ws     *websocket.Conn
	wsMu   sync.Mutex
	done   chan struct{}
	err    error
}

// Close ends the stream and waits for its goroutine.
func (s *Stream) Close() {
	s.cancel()
	if s.ws != nil {
		s.ws.Close()
	}
	<-s.done
}

// Err returns why the stream ended, after Frames is closed.
func (s *Stream) Err() error { <-s.done; return s.err }

// WriteFrame sends a client frame on a WebSocket stream.
func (s *Stream) WriteFrame(f any) error {
	if s.ws == nil {
		return errors.New("fclient: WriteFrame needs a WebSocket stream")
	}
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	s.wsMu.Lock()
	defer s.wsMu.Unlock()
	return s.ws.WriteMessage(websocket.TextMessage, b)
}

// WriteRaw sends raw bytes as one WebSocket message of type typ.
func (s *Stream) WriteRaw(typ int, b []byte) error {
	s.wsMu.Lock()
	defer s.wsMu.Unlock()
	return s.ws.WriteMessage(typ, b)
}

// WebSocket attaches over WebSocket.
func (c *Client) WebSocket(ctx context.Context) (*Stream, error) {
	u := "ws" + strings.TrimPrefix(c.Base, "http") + "/ws?" + c.query(nil)
	d := c.Dialer
	if d == nil {
		d = websocket.DefaultDialer
	}
	conn, resp, err := d.DialContext(ctx, u, c.Header)
	if err != nil {
		if resp != nil {
			return nil, &HTTPError{Status: resp.StatusCode}
		}
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	frames := make(chan Frame, 64)
	s := &Stream{Frames: frames, cancel: cancel, ws: conn, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer close(frames)
		defer conn.Close()
		go func() { <-ctx.Done(); conn.Close() }()
		for {
			_, b, err := conn.ReadMessage()
			if err != nil {
				s.err = err
				// A close frame is reported like the close frame of the other transports.
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					select {
					case frames <- Frame{T: "close", Code: ce.Code, Reason: ce.Text}:
					case <-ctx.Done():
					}
				}
				return
			}
			var f Frame
			if err := json.Unmarshal(b, &f); err != nil {
				s.err = fmt.Errorf("fclient: bad frame %q: %w", b, err)
				return
			}
			f.Size = len(b)
			select {
			case frames <- f:
			case <-ctx.Done():
				s.err = ctx.Err()
				return
			}
		}
	}()
	return s, nil
}

// SSE attaches over Server-Sent Events, with lastEventID as Last-Event-ID if not empty.
func (c *Client) SSE(ctx context.Context, lastEventID string) (*Stream, error) {
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Base+"/sse?"+c.query(nil), nil)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := c.do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		cancel()
		return nil, decodeResponse(resp, nil)
	}
	frames := make(chan Frame, 64)
	s := &Stream{Frames: frames, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer close(frames)
		defer resp.Body.Close()
		r := sse.NewEventStreamReader(resp.Body, 1<<20)
		for {
			ev, err := r.ReadEvent()
			if err != nil {
				s.err = err
				return
			}
			f, ok, err := ParseEvent(ev)
			if err != nil {
				s.err = err
				return
			}
			if !ok {
				continue
			}
			select {
			case frames <- f:
			case <-ctx.Done():
				s.err = ctx.Err()
				return
			}
		}
	}()
	return s, nil
}

// ParseEvent decodes one SSE event block (as split by r3labs/sse's EventStreamReader)
// into a frame; ok is false for blocks without data (retry hints, comments).
func ParseEvent(ev []byte) (f Frame, ok bool, err error) {
	var data []byte
	sc := bufio.NewScanner(bytes.NewReader(ev))
	sc.Buffer(make([]byte, 0, 4096), len(ev)+1)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "data: "):
			data = append(data, line[len("data: "):]...)
		case strings.HasPrefix(line, "id: "):
			f.EventID = line[len("id: "):]
		}
	}
	if data == nil {
		return f, false, nil
	}
	id := f.EventID
	if err := json.Unmarshal(data, &f); err != nil {
		return f, false, fmt.Errorf("fclient: bad SSE data %q: %w", data, err)
	}
	f.EventID, f.Size = id, len(data)
	return f, true, nil
}
