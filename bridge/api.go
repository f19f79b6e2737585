package bridge

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/ferryrt/ferry/bridge/broker"
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

func apiError(w http.ResponseWriter, status int, code session.Code, reason string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"code": code, "reason": reason})
}

// withCORS gives a session-less endpoint that reads tokens (/events, /api/history,
// /api/presence) the transports' origin policy: a foreign Origin gets 403 before the
// request is looked at, an allowed one gets CORS headers (with credentials only for
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
		w.Header().Set("Allow", "POST")
		apiError(w, http.StatusMethodNotAllowed, session.CodeBadRequest, "publish takes POST")
		return
	}
	if s.cfg.APIKey == "" {
		apiError(w, http.StatusForbidden, session.CodeForbidden, "publish API disabled: the server has no API key (--api-key)")
		return
	}
	if !s.hasAPIKey(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="ferry"`)
		apiError(w, http.StatusUnauthorized, session.CodeUnauthorized, "missing or wrong API key")
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		apiError(w, http.StatusUnsupportedMediaType, session.CodeBadRequest, "Content-Type must be application/json")
		return
	}
	limit := int64(s.mgr.Config().MaxMessageBytes) + 1024
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			apiError(w, http.StatusRequestEntityTooLarge, session.CodeTooBig, "body too large")
			return
		}
		apiError(w, http.StatusBadRequest, session.CodeBadRequest, "reading body failed")
		return
	}
	var req PublishRequest
	if err := json.Unmarshal(body, &req); err != nil {
		apiError(w, http.StatusBadRequest, session.CodeBadRequest, "malformed JSON body: want {\"channel\": ..., \"data\": ...}")
		return
	}
	if req.Data == nil {
		apiError(w, http.StatusBadRequest, session.CodeBadRequest, "missing data")
		return
	}
	ctx := r.Context()
	if key, ok := r.Header["Idempotency-Key"]; ok {
		if len(key) != 1 {
			apiError(w, http.StatusBadRequest, session.CodeBadRequest, "more than one Idempotency-Key header")
			return
		}
		var bad *session.Error
		if errors.As(broker.CheckIdempotencyKey(key[0]), &bad) {
			apiError(w, http.StatusBadRequest, session.CodeBadRequest, bad.Reason)
			return
		}
		ctx = WithIdempotencyKey(ctx, key[0])
	}
	pos, err := s.Publish(ctx, req.Channel, req.Data)
	if err != nil {
		if errors.Is(err, ErrIdempotencyConflict) {
			apiError(w, http.StatusUnprocessableEntity, session.CodeBadRequest, "Idempotency-Key already used for another payload on this channel")
			return
		}
		var e *session.Error
		if errors.As(err, &e) {
			apiError(w, e.Code.HTTPStatus(), e.Code, e.Reason)
			return
		}
		// The broker failed: say so, so that nothing is "200 and lost".
		s.log.Error("publish failed", "channel", req.Channel, "err", err)
		apiError(w, http.StatusServiceUnavailable, session.CodeInternal, "publish failed: broker unavailable")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(PublishResponse{Channel: req.Channel, Epoch: pos.Epoch, Offset: pos.Offset, Position: pos.String()})
}
