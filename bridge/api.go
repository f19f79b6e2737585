package bridge

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/ferryrt/ferry/bridge/broker"
	"github.com/ferryrt/ferry/internal/httpx"
	"github.com/ferryrt/ferry/session"
)

// PublishRequest is the body of POST {Base}/api/publish.
type PublishRequest struct {
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
}

// PublishResponse is its answer.
type PublishResponse struct {
	Channel  string `json:"channel"`
	Epoch    string `json:"epoch"`
	Offset   uint64 `json:"offset"`
	Position string `json:"position"`
}

// apiError answers an error with an explicit status; it is httpx.WriteError, kept for
// the presence API's handler.
func apiError(w http.ResponseWriter, status int, code session.Code, reason string) {
	httpx.WriteError(w, httpx.WithStatus(status, &session.Error{Code: code, Reason: reason}))
}

// withCORS gives an endpoint outside the transports (/api/publish, /api/history,
// /api/presence, /events) the transports' origin policy: a foreign Origin gets 403 before
// the request is looked at, an allowed one gets CORS headers (with credentials only for
// trusted origins, never for "*"), and a preflight is answered, so that a page on an
// allowed origin can send its Authorization header.
func (s *Server) withCORS(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.gate.CORS(w, r) {
			h(w, r)
		}
	}
}

// hasAPIKey reports whether r carries the configured API key.
func (s *Server) hasAPIKey(r *http.Request) bool {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && s.cfg.APIKey != "" && subtle.ConstantTimeCompare([]byte(token), []byte(s.cfg.APIKey)) == 1
}

// servePublish lets backends publish with the API key. PROTOCOL.md §5.
func (s *Server) servePublish(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		httpx.MethodNotAllowed(w, "POST")
		return
	}
	if s.cfg.APIKey == "" {
		httpx.WriteError(w, &session.Error{Code: session.CodeForbidden, Reason: "publish API disabled: the server has no API key (--api-key)"})
		return
	}
	if !s.hasAPIKey(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="ferry"`)
		httpx.WriteError(w, &session.Error{Code: session.CodeUnauthorized, Reason: "missing or wrong API key"})
		return
	}
	var req PublishRequest
	if err := httpx.ReadJSON(w, r, int64(s.mgr.Params().MaxMessageBytes)+1024, &req, false); err != nil {
		httpx.WriteError(w, err)
		return
	}
	if req.Data == nil {
		httpx.WriteError(w, &session.Error{Code: session.CodeBadRequest, Reason: "missing data"})
		return
	}
	ctx := r.Context()
	if key, ok := r.Header["Idempotency-Key"]; ok {
		if len(key) != 1 {
			httpx.WriteError(w, &session.Error{Code: session.CodeBadRequest, Reason: "more than one Idempotency-Key header"})
			return
		}
		var bad *session.Error
		if errors.As(broker.CheckIdempotencyKey(key[0]), &bad) {
			httpx.WriteError(w, &session.Error{Code: session.CodeBadRequest, Reason: bad.Reason})
			return
		}
		ctx = WithIdempotencyKey(ctx, key[0])
	}
	pos, err := s.Publish(ctx, req.Channel, req.Data)
	if err != nil {
		if errors.Is(err, ErrIdempotencyConflict) {
			httpx.WriteError(w, httpx.WithStatus(http.StatusUnprocessableEntity, &session.Error{Code: session.CodeBadRequest, Reason: "Idempotency-Key already used for another payload on this channel"}))
			return
		}
		var e *session.Error
		if errors.As(err, &e) {
			httpx.WriteError(w, e)
			return
		}
		// The broker failed: say so, so that nothing is "200 and lost".
		s.log.Error("publish failed", "channel", req.Channel, "err", err)
		httpx.WriteError(w, httpx.WithStatus(http.StatusServiceUnavailable, &session.Error{Code: session.CodeInternal, Reason: "publish failed: broker unavailable"}))
		return
	}
	httpx.WriteJSON(w, PublishResponse{Channel: req.Channel, Epoch: pos.Epoch, Offset: pos.Offset, Position: pos.String()})
}
