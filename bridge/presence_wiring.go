package bridge

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/ferryrt/ferry/bridge/presence"
	"github.com/ferryrt/ferry/internal/httpx"
	"github.com/ferryrt/ferry/session"
)

// PresenceResponse is the answer of GET {Base}/api/presence.
type PresenceResponse struct {
	Channel string            `json:"channel"`
	Members []presence.Member `json:"members"`
}

// presenceOn reports whether channel keeps presence.
func (s *Server) presenceOn(channel string) bool {
	return s.cfg.Presence != nil && granted(s.cfg.PresenceChannels, channel)
}

// presenceHook joins and leaves sessions in the presence store as the Manager reports
// their subscriptions.
type presenceHook struct{ s *Server }

func (h presenceHook) filter(channels []string) []string {
	var out []string
	for _, ch := range channels {
		if h.s.presenceOn(ch) {
			out = append(out, ch)
		}
	}
	return out
}

func (h presenceHook) Present(ctx context.Context, c session.Claims, channels []string) {
	if chans := h.filter(channels); len(chans) > 0 {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := h.s.cfg.Presence.Join(ctx, presence.Member{Session: c.SID, User: c.User}, chans...); err != nil {
			h.s.log.Warn("presence join failed", "sid", c.SID, "err", err)
		}
	}
}

func (h presenceHook) Absent(ctx context.Context, c session.Claims, channels []string) {
	if chans := h.filter(channels); len(chans) > 0 {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := h.s.cfg.Presence.Leave(ctx, presence.Member{Session: c.SID, User: c.User}, chans...); err != nil {
			h.s.log.Warn("presence leave failed", "sid", c.SID, "err", err)
		}
	}
}

// servePresence answers GET {base}/api/presence?channel=c with the members present on c:
// for backends with the API key, and for sessions (?session=) and identities that may
// subscribe to c.
func (s *Server) servePresence(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		httpx.MethodNotAllowed(w, "GET")
		return
	}
	ch := r.URL.Query().Get("channel")
	if err := session.CheckChannel(ch); err != nil {
		e := session.AsError(err)
		httpx.WriteError(w, httpx.WithStatus(http.StatusBadRequest, e))
		return
	}
	if !s.presenceOn(ch) {
		httpx.WriteError(w, httpx.WithStatus(http.StatusNotFound, &session.Error{Code: session.CodeBadRequest, Reason: "no presence kept on this channel"}))
		return
	}
	ctx := r.Context()
	if !s.hasAPIKey(r) {
		var claims session.Claims
		var err error
		if cred := r.URL.Query().Get("session"); cred != "" {
			claims, err = s.mgr.Verify(ctx, cred, nil)
		} else {
			var id session.Identity
			id, err = s.identify(r)
			claims = session.Claims{User: id.User, Grants: id.Grants}
		}
		if err == nil {
			err = handler{s}.Authorize(ctx, claims, session.ActSubscribe, ch)
		}
		if err != nil {
			e := session.AsError(err)
			httpx.WriteError(w, e)
			return
		}
	}
	members, err := s.cfg.Presence.List(ctx, ch)
	if err != nil {
		httpx.WriteError(w, httpx.WithStatus(http.StatusServiceUnavailable, &session.Error{Code: session.CodeInternal, Reason: "presence unavailable"}))
		return
	}
	if members == nil {
		members = []presence.Member{}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(PresenceResponse{Channel: ch, Members: members})
}
