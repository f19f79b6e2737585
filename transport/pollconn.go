package transport

import (
	"bufio"
	"bytes"
	"context"
	"errors"
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
//
// Three rules keep the pool's workers shared fairly (invariant 11):
//   - Nothing that may wait on the network runs on a worker. A request that asks the
//     session store (Verify, Attach, Resume, the first history read, the application's
//     Authenticate and Authorize) is served by run on a goroutine of its own, at most
//     storeConcurrency at once, within the Manager's StoreTimeout, with a context
//     cancelled when the client leaves; a history read due when a held poll wakes (a gap)
//     goes to awaitOff. Admission (CORS, method, a slot, a credential present) needs
//     nothing but the request, and stays on the worker.
//   - A turn on a worker serves at most turnRequests requests and reads at most turnBytes;
//     the next turn of the same connection is queued at the back of the pool's queue (as
//     is the turn after a request that went to the store), so a client that pipelines
//     without end waits behind everyone else.
//   - Whatever is not plainly a poll this file can serve the way net/http would (any other
//     method or path, HTTP/1.0, an Expect, a body, a header net/http would refuse, a header
//     longer than pollHeaderMax) goes back to net/http, which gives its own answer.

// pollHeaderMax bounds the header of a poll read on a taken-over connection, as
// MaxHeaderBytes does for net/http.
const pollHeaderMax = 64 << 10

// pollWorkers bounds the goroutines that serve the events of taken-over connections (see
// package workers): a few per core, as for WebSocket writers (more only take turns with
// them and with the publish that starts the next fan-out). None of their tasks waits on
// the network.
var pollWorkers = 4*runtime.GOMAXPROCS(0) + 4

// A connection's turn on the pool ends after turnRequests requests answered there or
// turnBytes read, whichever comes first.
const (
	turnRequests = 8
	turnBytes    = 32 << 10
)

// storeConcurrency bounds the requests of taken-over connections that wait on the
// session store at once; more wait (off the pool) for a place, within StoreTimeout.
var storeConcurrency = 64 * runtime.GOMAXPROCS(0)

const (
	defaultHeaderTimeout = 10 * time.Second
	defaultIdleTimeout   = 2 * time.Minute
)

type pcState uint8

const (
	pcReading   pcState = iota // a worker reads a request and starts serving it
	pcStarting                 // a goroutine of its own admits and attaches the request (run)
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
	serveFn  func()      // pc.serve, likewise

	// in holds the bytes of the next request read so far (incomplete, or pipelined, or
	// what net/http had read ahead), in a buffer lent by inBufs (inBuf) when it has
	// one; reqStart is when its first byte came. Only the goroutine serving the connection
	// (reading or answering) touches them.
	in       []byte
	inBuf    *[]byte
	reqStart time.Time
	turnRead int // bytes read in this turn

	mu    sync.Mutex
	state pcState
	p     *poll // while holding or answering
	// rw is the answer of p: its headers (CORS) were set when the request was admitted,
	// as net/http's handler sets them on its ResponseWriter, and every answer of the poll
	// (frames, ping, close, error) goes out with them.
	rw       *pollResponse
	cancel   context.CancelFunc // ends the store calls of the request being started
	deadline time.Time          // when the timer is due; a timer call before it is a stale one
	armed    bool               // the watch will report readability
	readable bool               // the watch reported data while a poll was open: read it next
	goAway   bool               // close after the current answer (Connection: close, a drain)
	gone     bool               // the client left (or half-closed) while its request started
	rewake   bool               // a wake came while await looked
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
	if !h.cfg.pooled() || !h.cfg.Handoff.open() || r.ProtoMajor != 1 || r.ProtoMinor < 1 || r.TLS != nil || r.Close ||
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
	pc.serveFn = pc.serve
	pc.timer = time.AfterFunc(time.Hour, pc.onTimer)
	pc.timer.Stop()
	// The watch starts armed, and its first call may come at once: it finds the watch
	// set once it has the lock.
	pc.mu.Lock()
	watch, err := netpoll.StartFunc(pc.conn, pc.onReadable, h.pool.Go)
	pc.watch, pc.armed = watch, err == nil
	pc.mu.Unlock()
	if err != nil {
		// A connection the poller can't watch (a wrapper from the listener): this poll is
		// answered here, and the connection goes back to net/http.
		pc.serveOnce(r)
		return true
	}
	h.conns.add(pc)
	h.cfg.Logger.Debug("poll connection taken over", "remote", r.RemoteAddr)
	pc.conn.SetReadDeadline(time.Time{}) // net/http's, for this request's body
	// This is net/http's goroutine, which may wait on the store: the first request runs
	// on it.
	rw := newPollResponse()
	if r.Close {
		pc.mu.Lock()
		pc.goAway = true
		pc.mu.Unlock()
	}
	ad, ok := h.admit(rw, r)
	if !ok {
		if pc.answered(rw) {
			h.pool.Go(pc.serveFn)
		}
		return true
	}
	pc.begin(r, rw, ad, false)
	return true
}

// serveOnce answers r with this goroutine waiting, then hands the connection back.
func (pc *pollConn) serveOnce(r *http.Request) {
	rw := newPollResponse()
	ctx := context.Background()
	sctx, cancel := pc.h.storeContext(ctx)
	p, ok := pc.h.start(sctx, rw, r)
	cancel()
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

// serve is one turn of the connection on the pool: it reads requests and answers those
// that admit refuses, at most turnRequests of them and turnBytes read, then queues the
// next turn at the back of the pool's queue; a request admitted goes to the store off
// the pool (begin), a request not complete yet leaves the connection waiting, one that
// is not a poll goes back to net/http.
func (pc *pollConn) serve() {
	pc.turnRead = 0
	for range turnRequests {
		r, err := pc.read()
		if err != nil {
			var back *handBackError
			switch {
			case errors.Is(err, errTurnOver):
				pc.h.pool.Go(pc.serveFn)
			case errors.Is(err, errNeedMore):
				pc.waitForRequest()
			case errors.As(err, &back):
				pc.handBack(pc.in)
			default:
				pc.close() // the client left
			}
			return
		}
		rw := newPollResponse()
		if r.Close { // a drain is seen by answered, which every path ends in
			pc.mu.Lock()
			pc.goAway = true
			pc.mu.Unlock()
		}
		ad, ok := pc.h.admit(rw, r)
		if ok {
			pc.begin(r, rw, ad, true)
			return
		}
		if !pc.answered(rw) {
			return
		}
	}
	pc.h.pool.Go(pc.serveFn)
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

// begin starts serving r: off the pool (async, on a goroutine of its own), since it asks
// the session store. The connection is watched meanwhile, so that a client that leaves
// cancels the store calls made for it, as net/http cancels a request's context.
func (pc *pollConn) begin(r *http.Request, rw *pollResponse, ad admitted, async bool) {
	ctx, cancel := pc.h.storeContext(context.Background())
	pc.mu.Lock()
	if pc.state == pcClosed {
		pc.mu.Unlock()
		ad.release()
		cancel()
		return
	}
	pc.state, pc.cancel = pcStarting, cancel
	arm := !pc.armed && !pc.readable && len(pc.in) == 0
	pc.armed = pc.armed || arm
	pc.mu.Unlock()
	if arm && !pc.watch.Arm() {
		ad.release()
		cancel()
		pc.close()
		return
	}
	if async {
		go pc.run(ctx, cancel, r, rw, ad)
	} else {
		pc.run(ctx, cancel, r, rw, ad)
	}
}

// run serves r where it may wait: admission, the session store's calls and the first
// look for frames (which may read history), at most storeConcurrency at once. The turn
// that reads the connection's next request is queued on the pool behind every other.
func (pc *pollConn) run(ctx context.Context, cancel context.CancelFunc, r *http.Request, rw *pollResponse, ad admitted) {
	readOn := pc.handle(ctx, r, rw, ad)
	pc.mu.Lock()
	pc.cancel = nil
	pc.mu.Unlock()
	cancel()
	if readOn {
		pc.h.pool.Go(pc.serveFn)
	}
}

// handle serves a poll and reports whether the connection's next request should be read
// at once (the poll was answered and more is buffered); otherwise the poll is held, or
// the connection waits or is closed. It may wait on the session store: never on the pool.
func (pc *pollConn) handle(ctx context.Context, r *http.Request, rw *pollResponse, ad admitted) (readOn bool) {
	if !pc.h.acquireStore(ctx) {
		// Every place was taken for StoreTimeout: a retryable answer, with the CORS
		// headers admit set, which the browser needs to read it.
		ad.release()
		pc.h.cfg.obs().Rejected("store_busy")
		writeError(rw, session.ErrStoreUnavailable)
		return pc.answered(rw)
	}
	defer pc.h.releaseStore()
	p, ok := pc.h.attachAdmitted(ctx, rw, r, ad)
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
	pc.state, pc.p, pc.rw = pcAnswering, p, rw
	pc.deadline = time.Now().Add(p.hold)
	pc.timer.Reset(p.hold)
	pc.mu.Unlock()
	p.a.SetOnWake(pc.wakeFn)
	return pc.await(ctx, p, rw, false)
}

// await answers p, which the caller has taken (state answering), with rw if its
// attachment has frames; otherwise it leaves p held, for the attachment's wake, the hold
// timer's ping or the client leaving to end. On the pool (local) it reads no history: when
// a read is due (a gap in a channel), it goes on in awaitOff.
func (pc *pollConn) await(ctx context.Context, p *poll, rw *pollResponse, local bool) (readOn bool) {
	var out []session.Outgoing
	var err error
	for {
		if local {
			out, err = p.a.TryNextLocal()
			if errors.Is(err, session.ErrNeedsSource) {
				go pc.awaitOff(p, rw)
				return false
			}
		} else {
			out, err = p.a.TryNext(ctx)
		}
		if out != nil || err != nil {
			break
		}
		// Nothing: TryNext has made the attachment wake us when something comes.
		pc.mu.Lock()
		if pc.state == pcClosed || pc.gone { // the client left while we looked
			pc.mu.Unlock()
			p.a.SetOnWake(nil)
			pc.h.abandon(p, true)
			pc.close()
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
	if err != nil {
		// The close frame went in an earlier answer; this poll gets the reason. A history
		// read cut by StoreTimeout is a retryable 503.
		writeError(rw, storeErr(ctx, err))
		pc.h.cfg.Manager.Detach(p.a)
		pc.h.cfg.obs().PollDone("closed")
	} else {
		pc.h.finish(rw, p, out)
	}
	p.release()
	return pc.answered(rw)
}

// awaitOff is await where it may wait for a history read, off the pool; the turn that
// reads the next request goes back to the pool.
func (pc *pollConn) awaitOff(p *poll, rw *pollResponse) {
	ctx, cancel := pc.h.storeContext(context.Background())
	defer cancel()
	if pc.await(ctx, p, rw, false) {
		pc.h.pool.Go(pc.serveFn)
	}
}

// wake runs under the attachment's lock when frames are ready for the poll.
func (pc *pollConn) wake() { pc.h.pool.Go(pc.onWakeFn) }

func (pc *pollConn) onWake() {
	pc.mu.Lock()
	switch pc.state {
	case pcHolding:
		pc.state = pcAnswering
		p, rw := pc.p, pc.rw
		pc.mu.Unlock()
		if pc.await(context.Background(), p, rw, true) {
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
	case pcStarting, pcHolding, pcAnswering:
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
	case gone && pc.state == pcStarting:
		// The client left (or only half-closed) while its request waits on the store: as
		// net/http does, the request's context is cancelled, and what it answers is still
		// written before the connection closes; a poll it would hold is abandoned.
		pc.gone, pc.goAway = true, true
		cancel := pc.cancel
		pc.mu.Unlock()
		if cancel != nil {
			cancel()
		}
	case gone:
		// The client left. A held poll ends having sent nothing: the attachment is
		// parked for the same cursor, as when a net/http poll's request is cancelled.
		// An answer being written fails or is lost; the client's next poll can't carry
		// its cursor, and recovers from history.
		pc.goAway = true
		pc.mu.Unlock()
		pc.close()
	default:
		rearm := pc.state == pcStarting || pc.state == pcHolding || pc.state == pcAnswering
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
				pc.h.pool.Go(pc.serveFn)
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
	pc.p, pc.rw = nil, nil
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
	cancel := pc.cancel
	pc.state, pc.p, pc.rw = pcClosed, nil, nil
	pc.mu.Unlock()
	if cancel != nil {
		cancel()
	}
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

// handBack gives the connection, with the bytes read ahead, back to net/http. A request
// begun already keeps the header deadline of its first byte: net/http's own
// ReadHeaderTimeout would start afresh, and a client dribbling a header would get twice
// as long.
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
		c = &prefixConn{Conn: pc.conn, buf: append([]byte(nil), buffered...),
			headerBy: pc.reqStart.Add(pc.h.cfg.HeaderTimeout)}
	}
	pc.releaseIn()
	pc.h.cfg.Handoff.give(c)
}

// Errors of read that end a turn.
var (
	errNeedMore = errors.New("request incomplete")        // wait for the rest
	errTurnOver = errors.New("turn over: read turnBytes") // queue the next turn
)

// handBackError says the request is not one this file serves: net/http serves it.
type handBackError struct{}

func (*handBackError) Error() string { return "not a plain poll" }

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

// read returns the next request, reading what the connection has without waiting, at
// most pollHeaderMax bytes: errNeedMore if its header is not complete yet, a
// *handBackError if it is not a plain poll (left unread in pc.in).
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
		if pc.turnRead >= turnBytes {
			return nil, errTurnOver
		}
		if len(pc.in) >= pollHeaderMax {
			// A header this long is net/http's to refuse, or to read, under its own
			// MaxHeaderBytes.
			return nil, &handBackError{}
		}
		if pc.inBuf == nil {
			pc.inBuf = inBufs.Get().(*[]byte)
			pc.in = append((*pc.inBuf)[:0], pc.in...)
			if len(pc.in) == 0 {
				pc.reqStart = time.Now()
			}
		}
		if len(pc.in) == cap(pc.in) {
			pc.in = append(pc.in, 0)[:len(pc.in)] // grow
		}
		room := pc.in[len(pc.in):min(cap(pc.in), pollHeaderMax)]
		n, rerr := netpoll.TryRead(pc.conn, room)
		pc.in = pc.in[:len(pc.in)+n]
		pc.turnRead += n
		if rerr != nil {
			if errors.Is(rerr, netpoll.ErrWouldBlock) {
				if len(pc.in) == 0 {
					pc.releaseIn()
				}
				return nil, errNeedMore
			}
			if len(pc.in) > 0 && n > 0 {
				continue // what came before the end is parsed first
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

// parsePoll parses the request at the start of in if it is a plain GET of the poll path
// that target names ("GET /ferry/poll") and returns it with the bytes it took. It returns
// errNeedMore while the header is incomplete and a *handBackError when the request is
// anything else, or anything net/http would answer otherwise than by calling the poll
// handler (see servable).
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
	if err != nil || !servable(r, in[:end]) {
		return nil, 0, &handBackError{}
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

// servable reports whether net/http's server would hand r (whose header is raw) to the
// poll handler as it is, keep-alive, and that handler would take its connection over: an
// HTTP/1.1 request with one valid Host header, valid header fields, no body and no
// Expect. Anything else (a 505 for another version, a 400 for a bad Host or field, a 417
// for an expectation, a body to read or discard, HTTP/1.0 keep-alive) is net/http's to
// answer, so it goes back there: answers on a taken-over connection are net/http's.
func servable(r *http.Request, raw []byte) bool {
	if r.ProtoMajor != 1 || r.ProtoMinor != 1 || r.ContentLength != 0 || len(r.TransferEncoding) > 0 ||
		r.Host == "" || !httpguts.ValidHostHeader(r.Host) || hostLines(raw) != 1 || len(r.Header["Expect"]) > 0 {
		return false
	}
	for k, vv := range r.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return false
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return false
			}
		}
	}
	return true
}

// hostLines counts the header lines of raw named Host (http.ReadRequest moves the Host
// header out of r.Header, and net/http's server refuses a request without one or with
// several).
func hostLines(raw []byte) int {
	n := 0
	for {
		i := bytes.IndexByte(raw, '\n')
		if i < 0 {
			return n
		}
		raw = raw[i+1:]
		if len(raw) >= 5 && raw[4] == ':' && strings.EqualFold(string(raw[:4]), "host") {
			n++
		}
	}
}

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
