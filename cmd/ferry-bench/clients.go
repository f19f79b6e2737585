package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// client is one simulated subscriber. connect returns once the client is subscribed (or
// as subscribed as its protocol can tell); read then receives until the connection ends
// or ctx is done. A stalled client never calls read. close releases everything and may
// be called at any time from any goroutine... except that the run calls it once, after
// ctx is cancelled.
type client interface {
	connect(ctx context.Context) error
	read(ctx context.Context, s *stats) error
	close()
}

// env is what every client of a run shares.
type env struct {
	o      *options
	u      *url.URL // server base URL (scheme, host)
	d      *dialer
	wsDial websocket.Dialer
}

func newEnv(o *options) (*env, error) {
	u, err := url.Parse(o.url)
	if err != nil {
		return nil, fmt.Errorf("--url: %w", err)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("--url: want http://host:port, got %q", o.url)
	}
	e := &env{o: o, u: u, d: &dialer{timeout: 10 * time.Second}}
	if loopback(u.Hostname()) && o.sources > 0 {
		e.d.sources = o.sources
	}
	e.wsDial = websocket.Dialer{
		HandshakeTimeout: 10 * time.Second,
		// Small buffers: the generator holds ten thousand of these, and frames are small.
		ReadBufferSize:  2048,
		WriteBufferSize: 512,
	}
	return e, nil
}

// newClient returns client i of the run; stalled clients stop reading once subscribed.
func (e *env) newClient(i int, stalled bool) client {
	cc := clientConf{e: e, laddr: e.d.source(i)}
	if stalled {
		cc.rcvbuf = 4096
	}
	switch e.o.target + "/" + e.o.transport {
	case "ferry/websocket":
		return &ferryWS{clientConf: cc}
	case "ferry/sse":
		return &ferrySSE{clientConf: cc}
	case "ferry/longpoll":
		return &ferryPoll{clientConf: cc}
	case "socketio/websocket":
		return &sioWS{clientConf: cc}
	case "socketio/polling":
		return &sioPoll{clientConf: cc}
	case "gorilla/websocket":
		return &floorWS{clientConf: cc}
	}
	panic("unreachable: options are validated")
}

// clientConf is what every client has: the run's env, its source address, and for a
// stalled client a small receive buffer.
type clientConf struct {
	e      *env
	laddr  *net.TCPAddr
	rcvbuf int
}

// wsDialer returns a WebSocket dialer for the client's connections.
func (cc *clientConf) wsDialer() *websocket.Dialer {
	d := cc.e.wsDial
	d.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return cc.e.d.DialContext(ctx, network, addr, cc.laddr, cc.rcvbuf)
	}
	return &d
}

// httpConn returns a new HTTP connection of the client.
func (cc *clientConf) httpConn(ctx context.Context, rcvbuf int) *httpConn {
	return newHTTPConn(ctx, cc.e.d, cc.e.u, cc.laddr, rcvbuf)
}

// wsConn wraps a client WebSocket: reading into one reused buffer (gorilla's
// ReadMessage allocates one per message) and closing it when ctx is done.
type wsConn struct {
	c    *websocket.Conn
	buf  []byte
	stop func() bool
}

func dialWS(ctx context.Context, d *websocket.Dialer, u string) (*wsConn, error) {
	c, resp, err := d.DialContext(ctx, u, nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("websocket handshake: HTTP %d", resp.StatusCode)
		}
		return nil, err
	}
	w := &wsConn{c: c, buf: make([]byte, 0, 512)}
	// Closing the connection is how a blocked read learns that the run is over.
	w.stop = context.AfterFunc(ctx, func() { c.NetConn().SetDeadline(time.Unix(1, 0)) })
	return w, nil
}

// next returns the next text message; the slice is valid until the next call.
func (w *wsConn) next() ([]byte, error) {
	for {
		typ, r, err := w.c.NextReader()
		if err != nil {
			return nil, err
		}
		if typ != websocket.TextMessage {
			continue
		}
		b := w.buf[:0]
		for {
			if len(b) == cap(b) {
				b = append(b, 0)[:len(b)]
			}
			n, err := r.Read(b[len(b):cap(b)])
			b = b[:len(b)+n]
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, err
			}
		}
		w.buf = b
		return b, nil
	}
}

func (w *wsConn) close() {
	if w != nil {
		w.stop()
		w.c.Close()
	}
}

// ---- Ferry -------------------------------------------------------------------------

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
	cs seqState
}

func (c *ferryWS) connect(ctx context.Context) error {
	h := c.httpConn(ctx, 0)
	cred, err := negotiate(h, c.e.o.base)
	h.Close()
	if err != nil {
		return err
	}
	u := "ws://" + c.e.u.Host + c.e.o.base + "/ws?" + c.e.ferryQuery(cred, c.e.o.channel+"=")
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
	cs   seqState
}

func (c *ferrySSE) connect(ctx context.Context) error {
	c.h = c.httpConn(ctx, c.rcvbuf)
	cred, err := negotiate(c.h, c.e.o.base)
	if err != nil {
		return err
	}
	resp, err := c.h.Stream(c.e.o.base+"/sse?"+c.e.ferryQuery(cred, c.e.o.channel+"="), map[string]string{"Accept": "text/event-stream"})
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
	cs   seqState
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
	q := c.query + url.QueryEscape(c.e.o.channel+"="+c.pos)
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

// ---- Socket.IO 4 (Engine.IO v4, Socket.IO v5) ---------------------------------------
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
	cs seqState
}

func (c *sioWS) connect(ctx context.Context) error {
	var err error
	c.ws, err = dialWS(ctx, c.wsDialer(), "ws://"+c.e.u.Host+sioPath+"websocket")
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
	cs  seqState
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

// ---- gorilla floor -------------------------------------------------------------------

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
