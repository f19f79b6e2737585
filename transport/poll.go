package transport

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/ferryrt/ferry/session"
)

// PollHandler serves GET /poll: one long-poll request, answered at once when frames are
// waiting and otherwise held. PROTOCOL.md §4.
type PollHandler struct{ cfg *Config }

// NewPoll returns the long-polling handler.
func NewPoll(cfg Config) *PollHandler { return &PollHandler{cfg: cfg.withDefaults()} }

func (h *PollHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	release, ok := h.cfg.admitGET(w, r, "poll")
	if !ok {
		return
	}
	defer release()
	ctx := r.Context()
	req, err := h.cfg.attachRequest(ctx, r, LongPoll)
	if err != nil {
		h.cfg.logFailure(r, "poll", err)
		writeError(w, err)
		return
	}
	q := r.URL.Query()
	req.Hello = q.Get("hello") == "1"
	req.Heartbeat = false
	hold := h.cfg.Manager.Config().PollHold
	if v := q.Get("hold"); v != "" {
		ms, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			writeError(w, session.Errorf(session.CodeBadRequest, "bad hold %.20q: want milliseconds", v))
			return
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
		a, err = h.cfg.Manager.Attach(ctx, req)
	}
	if errors.Is(err, session.ErrSuperseded) {
		// A late poll from before the client's current attachment.
		h.cfg.obs().PollDone("superseded")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if err != nil {
		h.cfg.logFailure(r, "poll", err)
		writeError(w, err)
		return
	}
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Now().Add(hold + writeWait))
	rc.SetReadDeadline(time.Time{}) // a server ReadTimeout shorter than the hold would cancel it

	out, err := a.Next(ctx, time.Now().Add(hold))
	obs := h.cfg.obs()
	if err != nil {
		obs.PollDone("gone")
		if ctx.Err() != nil {
			// The client went away having been sent nothing: if it comes back, it polls
			// again from the same cursor.
			h.cfg.Manager.Park(a, req.Cursor)
		} else {
			h.cfg.Manager.Detach(a)
		}
		return
	}
	if e := a.Err(); e != nil {
		h.cfg.Manager.Detach(a)
		if errors.Is(e, session.ErrSuperseded) {
			// A newer poll of this session delivers from its own cursor; this one returns
			// having sent nothing, so nothing is lost or sent twice.
			obs.PollDone("superseded")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		obs.PollDone("closed")
	} else {
		if len(out) == 1 && isFrame(out[0].JSON, session.FramePing) {
			obs.PollDone("timeout")
		} else {
			obs.PollDone("data")
		}
		// If this answer reaches the client, its next poll carries this cursor and
		// continues from the parked attachment; if it is lost, the next poll's cursor
		// differs and it attaches afresh, recovering from history. Parked before the
		// answer leaves, so that the next poll finds it.
		h.cfg.Manager.Park(a, req.Cursor.Advance(out))
	}
	obs.Sent(LongPoll, len(out), writeFrames(w, out))
}

// writeFrames answers {"frames":[...]} without re-encoding the frames, and returns the
// bytes written.
func writeFrames(w http.ResponseWriter, out []session.Outgoing) int {
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
