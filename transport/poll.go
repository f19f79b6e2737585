package transport

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/ferryrt/ferry/session"
	"github.com/ferryrt/ferry/transport/internal/workers"
)

// PollHandler serves GET /poll: one long-poll request, answered at once when frames are
// waiting and otherwise held. PROTOCOL.md §4.
//
// When Config.Handoff is served, a plain HTTP/1.1 keep-alive connection that carries a
// poll is taken over after its first poll and its later polls are served here (see
// pollConn), with no goroutine or net/http buffer held while a poll waits; any other
// request on it goes back to net/http through the Handoff.
type PollHandler struct {
	cfg   *Config
	conns pollConns
	pool  *workers.Pool
	// starts runs the requests of taken-over connections that may wait on the store
	// (pollConn.run), on goroutines kept between them: a goroutine for each would cost
	// its start and the growth of its stack on every poll.
	starts *workers.Pool
	store  chan struct{} // a place for each request of a taken-over connection in the store
}

// NewPoll returns the long-polling handler.
func NewPoll(cfg Config) *PollHandler {
	return &PollHandler{cfg: cfg.withDefaults(), pool: workers.New(pollWorkers, 250*time.Millisecond, 0),
		starts: workers.New(storeConcurrency, 250*time.Millisecond, 0), store: make(chan struct{}, storeConcurrency)}
}

// storeContext bounds the part of a poll that may wait on the session store (and on
// the application's Authenticate and Authorize) by the Manager's StoreTimeout, which
// also bounds each store call: on a taken-over connection it includes the wait for a
// place among them (acquireStore).
func (h *PollHandler) storeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, h.cfg.Manager.Params().StoreTimeout)
}

// connStoreContext is storeContext for a request of a taken-over connection, which has
// no parent context: a pollCtx, which starts no timer unless something waits on it.
func (h *PollHandler) connStoreContext() *pollCtx {
	return newPollCtx(time.Now().Add(h.cfg.Manager.Params().StoreTimeout))
}

// acquireStore takes a place among the requests of taken-over connections that may wait
// on the store, waiting (off the pool) until ctx ends.
func (h *PollHandler) acquireStore(ctx context.Context) bool {
	select {
	case h.store <- struct{}{}:
		return true
	default:
	}
	select {
	case h.store <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (h *PollHandler) releaseStore() { <-h.store }

// storeErr turns an error that came of the store timeout passing (in a call that does
// not say so itself: the application's, a history read) into ErrStoreUnavailable: 503,
// code 4000, which clients retry.
func storeErr(ctx context.Context, err error) error {
	var e *session.Error
	if errors.Is(ctx.Err(), context.DeadlineExceeded) && !errors.As(err, &e) {
		return session.ErrStoreUnavailable
	}
	return err
}

// poll is one poll that has its attachment and waits for frames to answer with.
type poll struct {
	a       *session.Attachment
	cursor  session.Cursor // the client's, from the request
	hold    time.Duration
	release func() // the connection slot; Park or Detach of a is separate
}

func (h *PollHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.takeOver(w, r) {
		return
	}
	ctx := r.Context()
	sctx, cancel := h.storeContext(ctx)
	p, ok := h.start(sctx, w, r)
	cancel()
	if !ok {
		return
	}
	defer p.release()
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Now().Add(p.hold + writeWait()))
	rc.SetReadDeadline(time.Time{}) // a server ReadTimeout shorter than the hold would cancel it

	out, err := p.a.Next(ctx, time.Now().Add(p.hold))
	if err != nil {
		// The client went away having been sent nothing (or the attachment's close was
		// sent already).
		h.abandon(p, ctx.Err() != nil)
		return
	}
	h.finish(w, p, out)
}

// start admits, authenticates and parses a poll and finds its attachment: the parked one
// it continues, or a new one. On false it has answered w.
func (h *PollHandler) start(ctx context.Context, w http.ResponseWriter, r *http.Request) (*poll, bool) {
	ad, ok := h.admit(w, r)
	if !ok {
		return nil, false
	}
	return h.attachAdmitted(ctx, w, r, ad)
}

// admitted is a poll that passed admit.
type admitted struct {
	q       queryGetter // parsed once: a poll's query is long (credential, cursor)
	release func()      // its connection slot
}

// admit makes the checks of a poll that need nothing but the request itself: CORS, the
// method, a connection slot, a credential to verify. It never waits, so a taken-over
// connection makes them on the pool (see pollConn); on false it has answered w.
func (h *PollHandler) admit(w http.ResponseWriter, r *http.Request) (admitted, bool) {
	release, ok := h.cfg.admitGET(w, r, "poll")
	if !ok {
		return admitted{}, false
	}
	q := parsePollQuery(r.URL.RawQuery)
	if q.Get("session") == "" {
		release()
		err := session.Errorf(session.CodeSessionExpired, "missing session parameter")
		h.cfg.logFailure(r, "poll", err)
		writeError(w, err)
		return admitted{}, false
	}
	return admitted{q: q, release: release}, true
}

// attachAdmitted is the part of start that may wait on the session store (and on the
// application's Authenticator and Authorize): verifying, attaching, continuing.
func (h *PollHandler) attachAdmitted(ctx context.Context, w http.ResponseWriter, r *http.Request, ad admitted) (*poll, bool) {
	p, err := h.attach(ctx, r, ad.q)
	if err != nil {
		ad.release()
		err = storeErr(ctx, err)
		if errors.Is(err, session.ErrSuperseded) {
			// A late poll from before the client's current attachment.
			h.cfg.obs().PollDone("superseded")
			noContent(w)
			return nil, false
		}
		h.cfg.logFailure(r, "poll", err)
		writeError(w, err)
		return nil, false
	}
	p.release = ad.release
	return p, true
}

func (h *PollHandler) attach(ctx context.Context, r *http.Request, q queryGetter) (*poll, error) {
	req, err := h.cfg.attachQuery(ctx, r, q, LongPoll)
	if err != nil {
		return nil, err
	}
	req.Hello = q.Get("hello") == "1"
	req.Heartbeat = false
	hold := h.cfg.Manager.Params().PollHold
	if v := q.Get("hold"); v != "" {
		ms, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return nil, session.Errorf(session.CodeBadRequest, "bad hold %.20q: want milliseconds", v)
		}
		hold = min(hold, time.Duration(ms)*time.Millisecond)
	}
	// A poll that continues where the previous answer left the client picks up its parked
	// attachment: still subscribed, with what arrived meanwhile queued.
	var a *session.Attachment
	if !req.Hello {
		a = h.cfg.Manager.Resume(req.Claims, req.Seq, req.Cursor)
	}
	if a == nil {
		if a, err = h.cfg.Manager.Attach(ctx, req); err != nil {
			return nil, err
		}
	}
	return &poll{a: a, cursor: req.Cursor, hold: hold}, nil
}

// abandon ends a poll that answers nothing. gone says the client left having been sent
// nothing: if it comes back, it polls again from the same cursor, so the attachment is
// parked for it.
func (h *PollHandler) abandon(p *poll, gone bool) {
	h.cfg.obs().PollDone("gone")
	if gone {
		h.cfg.Manager.Park(p.a, p.cursor)
	} else {
		h.cfg.Manager.Detach(p.a)
	}
	p.release()
}

// finish answers a poll with out, the frames its attachment returned, and parks the
// attachment for the next poll. The caller releases p.
func (h *PollHandler) finish(w http.ResponseWriter, p *poll, out []session.Outgoing) {
	obs := h.cfg.obs()
	if e := p.a.Err(); e != nil {
		h.cfg.Manager.Detach(p.a)
		if errors.Is(e, session.ErrSuperseded) {
			// A newer poll of this session delivers from its own cursor; this one returns
			// having sent nothing, so nothing is lost or sent twice.
			obs.PollDone("superseded")
			noContent(w)
			return
		}
		obs.PollDone("closed")
	} else {
		if len(out) == 1 && out[0].Kind == session.KindPing {
			obs.PollDone("timeout")
		} else {
			obs.PollDone("data")
		}
		// If this answer reaches the client, its next poll carries this cursor and
		// continues from the parked attachment; if it is lost, the next poll's cursor
		// differs and it attaches afresh, recovering from history. Parked before the
		// answer leaves, so that the next poll finds it.
		h.cfg.Manager.Park(p.a, p.cursor.Advance(out))
	}
	obs.Sent(LongPoll, len(out), writeFrames(w, out))
}

func noContent(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// writeFrames answers {"frames":[...]} without re-encoding the frames, and returns the
// bytes written.
func writeFrames(w http.ResponseWriter, out []session.Outgoing) int {
	if pw, ok := w.(*pollResponse); ok {
		return pw.writeFrames(out)
	}
	n := len(`{"frames":[]}`)
	for _, o := range out {
		n += len(o.JSON) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, `{"frames":[`...)
	for i, o := range out {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, o.JSON...)
	}
	b = append(b, "]}"...)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
	return len(b)
}
