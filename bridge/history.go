package bridge

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/ferryrt/ferry/internal/httpx"
	"github.com/ferryrt/ferry/session"
)

// HistoryResponse is the answer of GET {base}/api/history.
type HistoryResponse struct {
	Channel string `json:"channel"`
	Epoch   string `json:"epoch"`
	// Top is the offset of the channel's latest message.
	Top uint64 `json:"top"`
	// Reset is true when since could not be honoured (another epoch, or older than
	// history): Messages then are the latest ones, as for a request without since.
	Reset    bool             `json:"reset"`
	Messages []HistoryMessage `json:"messages"`
	// More is true when more messages follow the last one returned.
	More bool `json:"more"`
}

// HistoryMessage is one message of a history answer.
type HistoryMessage struct {
	Offset uint64          `json:"offset"`
	Time   int64           `json:"ts"`
	Data   json.RawMessage `json:"data,omitempty"`
	Binary []byte          `json:"binary,omitempty"`
}

// maxHistoryLimit bounds one history answer.
const maxHistoryLimit = 1000

// serveHistory answers GET {base}/api/history?channel=c&since=<position>&limit=n: the
// messages after since, or the latest n without since. It is how an app rebuilds its view
// after a reset ("snapshot, then deltas"). Authorization is that of a subscription, or
// the API key. It is mounted behind withCORS: a token may come as a cookie, so a foreign
// page gets 403 before anything is read.
func (s *Server) serveHistory(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		httpx.MethodNotAllowed(w, "GET")
		return
	}
	q := r.URL.Query()
	ch := q.Get("channel")
	if err := session.CheckChannel(ch); err != nil {
		e := session.AsError(err)
		httpx.WriteError(w, httpx.WithStatus(http.StatusBadRequest, e))
		return
	}
	since, err := session.ParsePosition(q.Get("since"))
	if err != nil {
		httpx.WriteError(w, &session.Error{Code: session.CodeBadRequest, Reason: "bad since: " + session.AsError(err).Reason})
		return
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxHistoryLimit {
			httpx.WriteError(w, &session.Error{Code: session.CodeBadRequest, Reason: "bad limit: want 1 to " + strconv.Itoa(maxHistoryLimit)})
			return
		}
		limit = n
	}
	ctx := r.Context()
	if !s.hasAPIKey(r) {
		id, err := s.identify(r)
		if err == nil {
			err = handler{s}.Authorize(ctx, session.Claims{User: id.User, Grants: id.Grants}, session.ActSubscribe, ch)
		}
		if err != nil {
			e := session.AsError(err)
			httpx.WriteError(w, e)
			return
		}
	}

	_, top, _, err := s.broker.Since(ctx, ch, session.Position{}, 0)
	if err != nil {
		httpx.WriteError(w, httpx.WithStatus(http.StatusServiceUnavailable, &session.Error{Code: session.CodeInternal, Reason: "history unavailable"}))
		return
	}
	resp := HistoryResponse{Channel: ch, Epoch: top.Epoch, Top: top.Offset, Messages: []HistoryMessage{}}
	var from uint64
	switch {
	case !since.IsZero() && since.Epoch == top.Epoch && since.Offset <= top.Offset:
		from = since.Offset
	default:
		resp.Reset = !since.IsZero()
		from = top.Offset - min(top.Offset, uint64(limit))
	}
	msgs, _, ok, err := s.broker.Since(ctx, ch, session.Position{Epoch: top.Epoch, Offset: from}, limit)
	if err == nil && !ok {
		// Part of the range has left history: start at the oldest message still there.
		resp.Reset = resp.Reset || !since.IsZero()
		if from, err = oldestCovered(ctx, s.broker, ch, top, from); err == nil {
			msgs, _, _, err = s.broker.Since(ctx, ch, session.Position{Epoch: top.Epoch, Offset: from}, limit)
		}
	}
	if err != nil {
		httpx.WriteError(w, httpx.WithStatus(http.StatusServiceUnavailable, &session.Error{Code: session.CodeInternal, Reason: "history unavailable"}))
		return
	}
	for _, m := range msgs {
		resp.Messages = append(resp.Messages, HistoryMessage{Offset: m.Pos.Offset, Time: m.Time, Data: m.Payload(), Binary: m.Bin})
	}
	if n := len(msgs); n > 0 && msgs[n-1].Pos.Offset < top.Offset {
		resp.More = true
	}
	httpx.WriteJSON(w, resp)
}

// oldestCovered returns the smallest offset p in (lo, top] such that history covers
// everything after p-1, probing the broker by binary search: Since answers "covered or
// not" for any position, which is all a Broker promises.
func oldestCovered(ctx context.Context, b Broker, ch string, top session.Position, lo uint64) (uint64, error) {
	covered := func(after uint64) (bool, error) {
		_, _, ok, err := b.Since(ctx, ch, session.Position{Epoch: top.Epoch, Offset: after}, 1)
		return ok, err
	}
	ok, err := covered(lo)
	if err != nil || ok {
		return lo, err
	}
	hi := top.Offset // covered(top) is always true
	for lo+1 < hi {
		mid := lo + (hi-lo)/2
		ok, err := covered(mid)
		if err != nil {
			return 0, err
		}
		if ok {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi, nil
}
