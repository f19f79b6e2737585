package transport

import (
	"encoding/json"
	"net/http"

	"github.com/ferryrt/ferry/internal/httpx"
	"github.com/ferryrt/ferry/session"
)

// SendHandler serves POST /send: upstream frames of a session on SSE or long-polling.
// PROTOCOL.md §4.
type SendHandler struct{ cfg *Config }

// NewSend returns the upstream handler.
func NewSend(cfg Config) *SendHandler { return &SendHandler{cfg: cfg.withDefaults()} }

// SendRequest is the body of POST /send.
type SendRequest struct {
	Frames []json.RawMessage `json:"frames"`
}

// SendResponse is the answer to POST /send: one ack per frame, in order.
type SendResponse struct {
	Acks []json.RawMessage `json:"acks"`
}

func (h *SendHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.cfg.cors(w, r) {
		return
	}
	if r.Method != http.MethodPost {
		methodNotAllowed(w, "POST")
		return
	}
	ctx := r.Context()
	claims, err := h.cfg.verify(ctx, r, r.URL.Query().Get("session"))
	if err != nil {
		h.cfg.logFailure(r, "send", err)
		writeError(w, err)
		return
	}
	var req SendRequest
	if err := httpx.ReadJSON(w, r, h.cfg.MaxBodyBytes, &req, false); err != nil {
		h.cfg.logFailure(r, "send", err)
		writeError(w, err)
		return
	}
	frames, err := DecodeSendFrames(req.Frames, h.cfg.Manager.Params().MaxMessageBytes)
	if err != nil {
		h.cfg.obs().Rejected("bad_request")
		writeError(w, err)
		return
	}
	size := 0
	for _, f := range req.Frames {
		size += len(f)
	}
	h.cfg.obs().Received(HTTPUpstream, len(frames), size)
	acks, err := h.cfg.Manager.Upstream(ctx, claims, frames)
	if err != nil {
		writeError(w, err) // ErrSession, 401 4005: negotiate again and resend
		return
	}
	resp := SendResponse{Acks: make([]json.RawMessage, len(acks))}
	for i, a := range acks {
		resp.Acks[i] = a.Frame().JSON
	}
	writeJSON(w, resp)
}

// DecodeSendFrames validates every frame of a POST /send body; the first bad one fails
// the request, naming its index, before anything is processed.
func DecodeSendFrames(raw []json.RawMessage, maxPayload int) ([]session.ClientFrame, error) {
	if len(raw) == 0 {
		return nil, session.Errorf(session.CodeBadRequest, "no frames")
	}
	frames := make([]session.ClientFrame, len(raw))
	for i, b := range raw {
		f, err := session.DecodeClientFrame(b, maxPayload)
		if err != nil {
			e := session.AsError(err)
			return nil, session.Errorf(e.Code, "frame %d: %s", i, e.Reason)
		}
		frames[i] = f
	}
	return frames, nil
}
