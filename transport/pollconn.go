package transport

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/ferryrt/ferry/session"
	"github.com/ferryrt/ferry/transport/internal/netpoll"
)

// A long-polling client is a keep-alive connection that spends nearly all its life with a
// poll held open, then answers, then polls again at once. Served by net/http, every such
// connection keeps a goroutine, a 4 KiB reader and a 4 KiB writer for its life, and while
// a poll is held a second goroutine reading in the background: 30 to 40 KiB per client,
// ten times the session's own state, and a few syscalls per poll that find nothing.
//
// A pollConn serves a taken-over connection instead. It holds no goroutine while a poll
// waits (the attachment's wake queues the answer on the handler's worker pool when frames
// come, the timer pings when the hold ends, the poller reports the client leaving) nor
// between polls (the poller queues the reading of the next request). It reads what has
// arrived without waiting, into a buffer lent while a request is incomplete, parses a
// complete header with http.ReadRequest, and serves it only if it is a GET of the poll
// path; anything else goes back to net/http (Handoff) with the bytes read ahead, and with
// it the connection.

// pollHeaderMax bounds the header of a poll read on a taken-over connection, as
// MaxHeaderBytes does for net/http.
const pollHeaderMax = 64 << 10

// pollWorkers bounds the goroutines that serve the events of taken-over connections (see
// package workers): a few per core, as for WebSocket writers (more only take turns with
// them and with the publish that starts the next fan-out), with room for tasks that wait
// on the session store (a Redis round trip in Verify or Attach).
var pollWorkers = 4*runtime.GOMAXPROCS(0) + 4

const (
	defaultHeaderTimeout = 10 * time.Second
	defaultIdleTimeout   = 2 * time.Minute
)

type pcState uint8

const (
	pcReading   pcState = iota // a goroutine reads a request and starts serving it
	pcHolding                  // a poll waits for frames: no goroutine
	pcAnswering                // a goroutine answers the poll
	pcIdle                     // between requests: no goroutine
	pcClosed
)

// pollConn is one taken-over connection.
type pollConn struct {
	h        *PollHandler
	conn     net.Conn
	remote   string
	target   string // how the request line of a poll begins: "GET /ferry/poll"
	watch    *netpoll.Watch
	timer    *time.Timer // the hold while holding, the idle timeout while idle
	wakeFn   func()      // pc.wake, made once
	onWakeFn func()      // pc.onWake, likewise

	// in holds the bytes of the next request read so far (incomplete, or pipelined, or
	// what net/http had read ahead), in a buffer lent by inBufs (inBuf) when it has
	// one; reqStart is when its first byte came. Only the goroutine serving the connection
	// (reading or answering) touches them.
	in       []byte
	inBuf    *[]byte
	reqStart time.Time

	mu       sync.Mutex
	state    pcState
	p        *poll     // while holding or answering
	deadline time.Time // when the timer is due; a timer call before it is a stale one
	armed    bool      // the watch will report readability
	readable bool      // the watch reported data while a poll was open: read it next
	goAway   bool      // close after the current answer (Connection: close, a drain)
	rewake   bool      // a wake came while await looked
}

// pollConns is the set of a handler's taken-over connections, for Shutdown.
type pollConns struct {
	mu  sync.Mutex
	set map[*pollConn]struct{}
}

func (s *pollConns) add(pc *pollConn) {
	s.mu.Lock()
	if s.set == nil {
		s.set = make(map[*pollConn]struct{})
	}
	s.set[pc] = struct{}{}
	s.mu.Unlock()
}

func (s *pollConns) remove(pc *pollConn) {
	s.mu.Lock()
	delete(s.set, pc)
	s.mu.Unlock()
}

// Shutdown closes the taken-over connections that wait between polls and makes the
// others close after their answer. A draining server calls it after session.Manager's
// Shutdown, which answers every held poll with the close frame.
func (h *PollHandler) Shutdown() {
	h.conns.mu.Lock()
	all := make([]*pollConn, 0, len(h.conns.set))
	for pc := range h.conns.set {
		all = append(all, pc)
	}
	h.conns.mu.Unlock()
	for _, pc := range all {
		pc.mu.Lock()
		pc.goAway = true
		idle := pc.state == pcIdle
		pc.mu.Unlock()
		if idle {
			pc.close()
		}
	}
}

// takeOver serves r, and the later polls of its connection, on the hijacked connection,
// and reports false, having done nothing, if the connection can't be taken over: the
// Handoff isn't served, the request is not a plain HTTP/1.1 keep-alive one without a
// body, or the server drains.
func (h *PollHandler) takeOver(w http.ResponseWriter, r *http.Request) bool {
	if !h.cfg.Handoff.open() || r.ProtoMajor != 1 || r.ProtoMinor < 1 || r.TLS != nil || r.Close ||
		r.ContentLength != 0 || len(r.TransferEncoding) > 0 || // a body would be left unread before the next request
		!strings.HasPrefix(r.RequestURI, "/") || h.cfg.Manager.Draining() || !netpoll.Supported() {
		return false
	}
	path, _, _ := strings.Cut(r.RequestURI, "?")
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return false
	}
	pc := &pollConn{h: h, conn: conn, remote: r.RemoteAddr, target: "GET " + path, state: pcReading}
	var rest []byte
	if c, ok := conn.(*prefixConn); ok { // handed back once, and taken over again
		pc.conn, rest = c.Conn, c.buf
	}
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		rest = append(append([]byte(nil), b...), rest...)
	}
	if len(rest) > 0 {
		pc.in, pc.reqStart = rest, time.Now()
	}
	pc.wakeFn = pc.wake
	pc.onWakeFn = pc.onWake
	pc.timer = time.AfterFunc(time.Hour, pc.onTimer)
	pc.timer.Stop()
	watch, err := netpoll.StartFunc(pc.conn, pc.onReadable, h.pool.Go)
	if err != nil {
		// A connection the poller can't watch (a wrapper from the listener): this poll is
		// answered here, and the connection goes back to net/http.
		pc.serveOnce(r)
		return true
	}
	pc.watch = watch
	pc.armed = true
	h.conns.add(pc)
	pc.conn.SetReadDeadline(time.Time{}) // net/http's, for this request's body
	if pc.handle(r) {
		pc.serve()
	}
	return true
}

// serveOnce answers r with this goroutine waiting, then hands the connection back.
func (pc *pollConn) serveOnce(r *http.Request) {
	rw := newPollResponse()
	ctx := context.Background()
	p, ok := pc.h.start(ctx, rw, r)
	if ok {
		out, err := p.a.Next(ctx, time.Now().Add(p.hold))
		if err != nil {
			writeError(rw, err)
			pc.h.abandon(p, false)
		} else {
			pc.h.finish(rw, p, out)
			p.release()
		}
	}
	b := rw.appendTo(nil, false)
	pc.conn.SetWriteDeadline(time.Now().Add(writeWait))
	if _, err := pc.conn.Write(b); err != nil {
		pc.conn.Close()
		return
	}
	pc.conn.SetWriteDeadline(time.Time{})
	pc.handBack(pc.in)
}

// serve reads and serves requests as long as they are there: a held poll, a request not
// complete yet, or one for net/http ends it.
func (pc *pollConn) serve() {
	for {
		r, err := pc.read()
		if err != nil {
			var back *handBackError
			var perr *parseError
			switch {
			case errors.Is(err, errNeedMore):
				pc.waitForRequest()
			case errors.As(err, &back):
				pc.handBack(pc.in)
			case errors.Is(err, errHeaderTooLarge):
				pc.fail(http.StatusRequestHeaderFieldsTooLarge, "request header too large")
			case errors.Is(err, errBadPoll):
				pc.fail(http.StatusBadRequest, err.Error())
			case errors.As(err, &perr):
				pc.fail(http.StatusBadRequest, "malformed request: "+perr.Error())
			default:
				pc.close() // the client left
			}
			return
		}
		if !pc.handle(r) {
			return
		}
	}
}

// waitForRequest leaves the connection idle until the (rest of the) next request comes:
// within IdleTimeout of the last answer, and its header within HeaderTimeout of its first
// byte.
func (pc *pollConn) waitForRequest() {
	pc.mu.Lock()
	if pc.state == pcClosed {
		pc.mu.Unlock()
		return
	}
	pc.state = pcIdle
	if len(pc.in) > 0 {
		pc.deadline = pc.reqStart.Add(pc.h.cfg.HeaderTimeout)
	} else {
		pc.deadline = time.Now().Add(pc.h.cfg.IdleTimeout)
	}
	pc.timer.Reset(time.Until(pc.deadline))
	arm := !pc.armed
	pc.armed = true
	pc.mu.Unlock()
	if arm && !pc.watch.Arm() {
		pc.close()
	}
}

// handle serves a poll from the reading goroutine and reports whether that goroutine
// should read the next request at once (the poll was answered and more is buffered);
// otherwise the poll is held, or the connection waits or is closed.
func (pc *pollConn) handle(r *http.Request) (readOn bool) {
	ctx := context.Background()
	rw := newPollResponse()
	if r.Close { // a drain is seen by answered, which every path ends in
		pc.mu.Lock()
		pc.goAway = true
		pc.mu.Unlock()
	}
	p, ok := pc.h.start(ctx, rw, r)
	if !ok {
		return pc.answered(rw)
	}
	p.release = pc.h.cfg.handOff(p.release) // a drain waits for a held poll
	pc.mu.Lock()
	if pc.state == pcClosed {
		pc.mu.Unlock()
		pc.h.abandon(p, true)
		return false
	}
	pc.state, pc.p = pcAnswering, p
	pc.deadline = time.Now().Add(p.hold)
	pc.timer.Reset(p.hold)
	arm := !pc.armed && !pc.readable && len(pc.in) == 0
	pc.armed = pc.armed || arm
	pc.mu.Unlock()
	// Watched while held: a client that leaves is noticed, as net/http's background read
	// would.
	if arm && !pc.watch.Arm() {
		pc.close()
	}
	p.a.SetOnWake(pc.wakeFn)
	return pc.await(p)
}

// await answers p, which the caller has taken (state answering), if its attachment has
// frames; otherwise it leaves p held, for the attachment's wake, the hold timer's ping or
// the client leaving to end.
func (pc *pollConn) await(p *poll) (readOn bool) {
	var out []session.Outgoing
	var err error
	for {
		out, err = p.a.TryNext(context.Background())
		if out != nil || err != nil {
			break
		}
		// Nothing: TryNext has made the attachment wake us when something comes.
		pc.mu.Lock()
		if pc.state == pcClosed { // the client left while we looked
			pc.mu.Unlock()
			p.a.SetOnWake(nil)
			pc.h.abandon(p, true)
			return false
		}
		if pc.rewake { // a wake came while we looked
			pc.rewake = false
			pc.mu.Unlock()
			continue
		}
		pc.state = pcHolding
		pc.mu.Unlock()
		return false
	}
	pc.timer.Stop()
	p.a.SetOnWake(nil)
	rw := newPollResponse()
	if err != nil {
		// The close frame went in an earlier answer; this poll gets the reason.
		writeError(rw, err)
		pc.h.cfg.Manager.Detach(p.a)
		pc.h.cfg.obs().PollDone("closed")
	} else {
		pc.h.finish(rw, p, out)
	}
	p.release()
	return pc.answered(rw)
}

// wake runs under the attachment's lock when frames are ready for the poll.
func (pc *pollConn) wake() { pc.h.pool.Go(pc.onWakeFn) }

func (pc *pollConn) onWake() {
	pc.mu.Lock()
	switch pc.state {
	case pcHolding:
		pc.state = pcAnswering
		p := pc.p
		pc.mu.Unlock()
		if pc.await(p) {
			pc.serve()
		}
	case pcAnswering:
		pc.rewake = true // await looks again before it holds
		pc.mu.Unlock()
	default:
		pc.mu.Unlock()
	}
}

func (pc *pollConn) onTimer() {
	pc.mu.Lock()
	if time.Now().Before(pc.deadline) {
		pc.mu.Unlock()
		return // set for an earlier state
	}
	switch pc.state {
	case pcHolding, pcAnswering:
		// The hold is over: a ping is the answer. It wakes the held poll, or is found by
		// await looking (again, through rewake).
		p := pc.p
		pc.mu.Unlock()
		if p != nil {
			p.a.Ping()
		}
	case pcIdle:
		pc.mu.Unlock()
		pc.close()
	default:
		pc.mu.Unlock()
	}
}

// onReadable runs when the client sent something or left.
func (pc *pollConn) onReadable() {
	pc.mu.Lock()
	pc.armed = false
	switch pc.state {
	case pcIdle:
		pc.state = pcReading
		pc.mu.Unlock()
		pc.serve()
		return
	case pcHolding, pcAnswering:
	default:
		pc.mu.Unlock()
		return
	}
	pc.mu.Unlock()
	data, gone := netpoll.Peek(pc.conn)
	pc.mu.Lock()
	switch {
	case data:
		// A request pipelined behind the open poll: read once the poll is answered.
		pc.readable = true
		pc.mu.Unlock()
	case gone:
		// The client left. A held poll ends having sent nothing: the attachment is
		// parked for the same cursor, as when a net/http poll's request is cancelled.
		// An answer being written fails or is lost; the client's next poll can't carry
		// its cursor, and recovers from history.
		pc.goAway = true
		pc.mu.Unlock()
		pc.close()
	default:
		rearm := pc.state == pcHolding || pc.state == pcAnswering
		pc.armed = rearm
		pc.mu.Unlock()
		if rearm && !pc.watch.Arm() {
			pc.close()
		}
	}
}

// answered writes rw and moves on: it reports whether the caller should read the next
// request at once; otherwise the connection waits for one, or is closed. An answer the
// kernel doesn't take whole at once is finished on a goroutine of its own, which then
// moves on, so that a client that doesn't read holds up no worker.
func (pc *pollConn) answered(rw *pollResponse) (readOn bool) {
	pc.mu.Lock()
	goAway := pc.goAway || pc.state == pcClosed || pc.h.cfg.Manager.Draining()
	pc.mu.Unlock()
	buf := responseBufs.Get().(*[]byte)
	b := rw.appendTo((*buf)[:0], goAway)
	n, err := netpoll.TryWrite(pc.conn, b)
	if err == nil && n < len(b) {
		rest := append([]byte(nil), b[n:]...)
		putResponseBuf(buf, b)
		go func() {
			pc.conn.SetWriteDeadline(time.Now().Add(writeWait))
			_, err := pc.conn.Write(rest)
			if pc.afterAnswer(err, goAway) {
				pc.serve()
			}
		}()
		return false
	}
	putResponseBuf(buf, b)
	return pc.afterAnswer(err, goAway)
}

// afterAnswer moves on once an answer is written (err nil) or has failed.
func (pc *pollConn) afterAnswer(err error, goAway bool) (readOn bool) {
	if err != nil || goAway {
		pc.close()
		return false
	}
	pc.mu.Lock()
	if pc.state == pcClosed {
		pc.mu.Unlock()
		return false
	}
	pc.p = nil
	pc.state = pcReading
	if pc.readable || len(pc.in) > 0 {
		pc.readable = false
		pc.mu.Unlock()
		return true
	}
	pc.mu.Unlock()
	pc.waitForRequest()
	return false
}

// close closes the connection, once, and ends a held poll as one the client left.
func (pc *pollConn) close() {
	pc.mu.Lock()
	if pc.state == pcClosed {
		pc.mu.Unlock()
		return
	}
	var held *poll
	if pc.state == pcHolding {
		held = pc.p
	}
	pc.state, pc.p = pcClosed, nil
	pc.mu.Unlock()
	pc.timer.Stop()
	if pc.watch != nil {
		pc.watch.Stop()
	}
	pc.conn.Close()
	pc.h.conns.remove(pc)
	pc.releaseIn()
	if held != nil {
		held.a.SetOnWake(nil)
		pc.h.abandon(held, true)
	}
}

// fail answers a request that could not be read as a poll, and closes the connection:
// what follows a bad request can't be trusted to start where it seems to.
func (pc *pollConn) fail(status int, reason string) {
	rw := newPollResponse()
	writeError(rw, &statusError{status, session.Errorf(session.CodeBadRequest, "%s", reason)})
	pc.h.cfg.obs().Rejected("bad_request")
	netpoll.TryWrite(pc.conn, rw.appendTo(nil, true)) // what fits; the connection closes anyway
	pc.close()
}

// handBack gives the connection, with the bytes read ahead, back to net/http.
func (pc *pollConn) handBack(buffered []byte) {
	pc.mu.Lock()
	pc.state = pcClosed
	pc.mu.Unlock()
	pc.timer.Stop()
	if pc.watch != nil {
		pc.watch.Stop()
	}
	pc.h.conns.remove(pc)
	var c net.Conn = pc.conn
	if len(buffered) > 0 {
		c = &prefixConn{Conn: pc.conn, buf: append([]byte(nil), buffered...)}
	}
	pc.releaseIn()
	pc.h.cfg.Handoff.give(c)
}

// Errors of reading a request on a taken-over connection.
var (
	errNeedMore       = errors.New("request incomplete")
	errHeaderTooLarge = errors.New("request header too large")
	errBadPoll        = errors.New("bad request")
)

// handBackError says the request is not a poll: net/http serves it.
type handBackError struct{}

func (*handBackError) Error() string { return "not a poll" }

// parseError is a request http.ReadRequest refused.
type parseError struct{ err error }

func (e *parseError) Error() string { return e.err.Error() }

// inBufs lends the buffer of a request being read; a connection holds one only while a
// request is incomplete or pipelined.
var inBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func (pc *pollConn) releaseIn() {
	if pc.inBuf != nil {
		*pc.inBuf = pc.in[:0]
		if cap(pc.in) <= 4096 {
			inBufs.Put(pc.inBuf)
		}
		pc.inBuf = nil
	}
	pc.in = nil
}

// read returns the next request, reading what the connection has without waiting:
// errNeedMore if its header is not complete yet, a *handBackError if it is not a GET of
// the poll path (left unread in pc.in).
func (pc *pollConn) read() (*http.Request, error) {
	for {
		r, used, err := parsePoll(pc.in, pc.target)
		if err == nil {
			pc.consume(used)
			r.RemoteAddr = pc.remote
			return r, nil
		}
		if !errors.Is(err, errNeedMore) {
			return nil, err
		}
		if len(pc.in) >= pollHeaderMax {
			return nil, errHeaderTooLarge
		}
		if pc.inBuf == nil {
			pc.inBuf = inBufs.Get().(*[]byte)
			pc.in = append((*pc.inBuf)[:0], pc.in...)
			pc.reqStart = time.Now()
		}
		if len(pc.in) == cap(pc.in) {
			pc.in = append(pc.in, 0)[:len(pc.in)] // grow
		}
		room := pc.in[len(pc.in):min(cap(pc.in), pollHeaderMax)]
		n, rerr := netpoll.TryRead(pc.conn, room)
		pc.in = pc.in[:len(pc.in)+n]
		if rerr != nil {
			if errors.Is(rerr, netpoll.ErrWouldBlock) {
				if len(pc.in) == 0 {
					pc.releaseIn()
				}
				return nil, errNeedMore
			}
			return nil, rerr
		}
	}
}

// consume drops the first n bytes of pc.in, keeping what follows (a pipelined request).
func (pc *pollConn) consume(n int) {
	rest := copy(pc.in, pc.in[n:])
	pc.in = pc.in[:rest]
	if rest == 0 {
		pc.releaseIn()
	} else {
		pc.reqStart = time.Now()
	}
}

var headerReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}

// parsePoll parses the request at the start of in if it is a GET of the poll path that
// target names ("GET /ferry/poll") and returns it with the bytes it took. It returns
// errNeedMore while the header is incomplete, a *handBackError when the request is
// anything else, and an error for a poll that does not parse as HTTP/1.x, has a body or
// lacks a valid Host.
func parsePoll(in []byte, target string) (*http.Request, int, error) {
	need := len(target) + 1
	head := in[:min(len(in), need)]
	if !bytes.HasPrefix([]byte(target), head) && !(len(head) == need && string(head[:len(target)]) == target) {
		return nil, 0, &handBackError{}
	}
	if len(head) < need {
		return nil, 0, errNeedMore // still reads as a poll
	}
	if c := head[len(target)]; c != '?' && c != ' ' {
		return nil, 0, &handBackError{}
	}
	end := headerEnd(in)
	if end < 0 {
		return nil, 0, errNeedMore
	}
	br := headerReaders.Get().(*bufio.Reader)
	br.Reset(bytes.NewReader(in[:end]))
	r, err := http.ReadRequest(br)
	br.Reset(nil)
	headerReaders.Put(br)
	if err != nil {
		return nil, 0, &parseError{err}
	}
	if err := checkPoll(r); err != nil {
		return nil, 0, err
	}
	return r, end, nil
}

// headerEnd returns the length of the request header at the start of in, through the
// empty line that ends it, or -1 if it is not all there. Lines may end in LF alone, as
// textproto allows.
func headerEnd(in []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(in[i:], '\n')
		if j < 0 {
			return -1
		}
		i += j + 1
		switch {
		case i < len(in) && in[i] == '\n':
			return i + 1
		case i+1 < len(in) && in[i] == '\r' && in[i+1] == '\n':
			return i + 2
		}
	}
}

// checkPoll refuses a poll request that net/http's server would refuse, or that has a
// body (a poll has none, and one that says otherwise may be smuggling the next request).
func checkPoll(r *http.Request) error {
	switch {
	case r.ProtoMajor != 1:
		return badPoll("not HTTP/1.x")
	case r.ContentLength != 0 || len(r.TransferEncoding) > 0:
		return badPoll("a poll has no body")
	case len(r.Header["Host"]) > 1:
		return badPoll("more than one Host header")
	case r.ProtoMinor >= 1 && r.Host == "":
		return badPoll("missing Host header")
	case !httpguts.ValidHostHeader(r.Host):
		return badPoll("malformed Host header")
	}
	for k, vv := range r.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return badPoll("invalid header name")
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return badPoll("invalid header value")
			}
		}
	}
	if !r.ProtoAtLeast(1, 1) {
		r.Close = true // HTTP/1.0 keep-alive is not worth its special cases
	}
	return nil
}

func badPoll(reason string) error { return fmt.Errorf("%w: %s", errBadPoll, reason) }

// pollResponse is the http.ResponseWriter of a poll on a taken-over connection: poll
// answers are small and complete at once, so it keeps the whole answer, written with one
// write.
type pollResponse struct {
	hdr    http.Header
	status int
	body   []byte
}

func newPollResponse() *pollResponse { return &pollResponse{hdr: make(http.Header, 4)} }

func (w *pollResponse) Header() http.Header { return w.hdr }

func (w *pollResponse) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *pollResponse) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.body = append(w.body, b...)
	return len(b), nil
}

var responseBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func putResponseBuf(p *[]byte, b []byte) {
	if cap(b) <= 64<<10 {
		*p = b[:0]
		responseBufs.Put(p)
	}
}

// appendTo appends w as an HTTP/1.1 response; goAway adds Connection: close.
func (w *pollResponse) appendTo(b []byte, goAway bool) []byte {
	w.WriteHeader(http.StatusOK)
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(w.status), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(w.status)...)
	b = append(b, "\r\nDate: "...)
	b = time.Now().UTC().AppendFormat(b, http.TimeFormat)
	b = append(b, "\r\n"...)
	hw := headerAppender{b}
	w.hdr.WriteSubset(&hw, noLength)
	b = hw.b
	bodyless := w.status == http.StatusNoContent || w.status == http.StatusNotModified
	if !bodyless {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, int64(len(w.body)), 10)
		b = append(b, "\r\n"...)
	}
	if goAway {
		b = append(b, "Connection: close\r\n"...)
	}
	b = append(b, "\r\n"...)
	if !bodyless {
		b = append(b, w.body...)
	}
	return b
}

// headerAppender is an io.Writer (and io.StringWriter, which http.Header.Write prefers)
// that appends to a byte slice.
type headerAppender struct{ b []byte }

func (a *headerAppender) Write(p []byte) (int, error) {
	a.b = append(a.b, p...)
	return len(p), nil
}

func (a *headerAppender) WriteString(s string) (int, error) {
	a.b = append(a.b, s...)
	return len(s), nil
}

// noLength leaves out the headers appendTo writes itself.
var noLength = map[string]bool{"Content-Length": true, "Connection": true, "Date": true}
