package transport

import (
	"context"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

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
	tw       netpoll.Writer // its answers' non-blocking writes
	tr       netpoll.Reader // its requests' non-blocking reads
	wd       coarseDeadline // the write deadline of each answer
	timer    *time.Timer    // the hold while holding, the idle timeout while idle
	wakeFn   func()         // pc.wake, made once
	onWakeFn func()         // pc.onWake, likewise
	serveFn  func()         // pc.serve, likewise

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
	starting *pollCtx  // the store calls of the request being started; cancelled if the client leaves
	deadline time.Time // when the timer is due; a timer call before it is a stale one
	armed    bool      // the watch will report readability
	readable bool      // the watch reported data while a poll was open: read it next
	goAway   bool      // close after the current answer (Connection: close, a drain)
	gone     bool      // the client left (or half-closed) while its request started
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
	rw.free()
	pc.conn.SetWriteDeadline(time.Now().Add(writeWait()))
	if _, err := pc.conn.Write(b); err != nil {
		pc.conn.Close()
		return
	}
	pc.conn.SetWriteDeadline(time.Time{})
	pc.giveBack(pc.in)
}
