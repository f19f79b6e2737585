package transport

// How a taken-over connection (pollConn, pollconn.go) moves between its states: a turn
// on the pool reads requests, a request that asks the store starts off the pool, a held
// poll waits for its wake, the hold timer or the client leaving, and an answer is written
// without waiting.

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/ferryrt/ferry/session"
	"github.com/ferryrt/ferry/transport/internal/netpoll"
)

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
			var back *notPollError
			switch {
			case errors.Is(err, errTurnOver):
				pc.h.pool.Go(pc.serveFn)
			case errors.Is(err, errNeedMore):
				pc.waitForRequest()
			case errors.As(err, &back):
				pc.giveBack(pc.in)
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
	ctx := pc.h.connStoreContext()
	pc.mu.Lock()
	if pc.state == pcClosed {
		pc.mu.Unlock()
		ad.release()
		ctx.cancel()
		return
	}
	pc.state, pc.starting = pcStarting, ctx
	arm := !pc.armed && !pc.readable && len(pc.in) == 0
	pc.armed = pc.armed || arm
	pc.mu.Unlock()
	if arm && !pc.watch.Arm() {
		ad.release()
		ctx.cancel()
		pc.close()
		return
	}
	if async {
		// Its own pool, whose tasks may wait: at most storeConcurrency of them run at
		// once, as many as may wait on the store; the rest wait their turn there.
		pc.h.starts.Go(func() { pc.run(ctx, r, rw, ad) })
	} else {
		pc.run(ctx, r, rw, ad)
	}
}

// run serves r where it may wait: admission, the session store's calls and the first
// look for frames (which may read history), at most storeConcurrency at once. The turn
// that reads the connection's next request is queued on the pool behind every other.
func (pc *pollConn) run(ctx *pollCtx, r *http.Request, rw *pollResponse, ad admitted) {
	readOn := pc.handle(ctx, r, rw, ad)
	pc.mu.Lock()
	pc.starting = nil
	pc.mu.Unlock()
	ctx.cancel()
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
	p.release = pc.h.cfg.outliveHandler(p.release) // a drain waits for a held poll
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
	ctx := pc.h.connStoreContext()
	defer ctx.cancel()
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
		starting := pc.starting
		pc.mu.Unlock()
		if starting != nil {
			starting.cancel()
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
	rw.free()
	// The runtime fails a non-blocking write too once the deadline has passed: each
	// answer gets one (coarsely: it moves the runtime's timer once in a while only).
	pc.wd.set(pc.conn, time.Now().Add(writeWait()))
	n, err := pc.tw.TryWrite(pc.conn, b)
	if err == nil && n < len(b) {
		rest := append([]byte(nil), b[n:]...)
		putResponseBuf(buf, b)
		go func() {
			pc.wd.set(pc.conn, time.Now().Add(writeWait()))
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
	starting := pc.starting
	pc.state, pc.p, pc.rw = pcClosed, nil, nil
	pc.mu.Unlock()
	if starting != nil {
		starting.cancel()
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

// giveBack gives the connection, with the bytes read ahead, back to net/http. A request
// begun already keeps the header deadline of its first byte: net/http's own
// ReadHeaderTimeout would start afresh, and a client dribbling a header would get twice
// as long.
func (pc *pollConn) giveBack(buffered []byte) {
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
