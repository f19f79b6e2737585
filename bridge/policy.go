package bridge

import (
	"context"
	"strings"

	"github.com/ferryrt/ferry/session"
)

// DefaultPolicy is the authorization used when Config.Authorize is nil:
//   - subscribe: any channel not starting with "$", the session's own "$session:<sid>",
//     for an identified session "$user:<user>", and channels its token grants;
//   - publish: channels matching one of the clientPublish patterns (never "$" channels),
//     and channels the token grants;
//   - send: allowed (refused with 4104 when there is no OnMessage handler).
//
// A token's grants (the JWT "channels" claim) widen the policy; they can open "$"
// channels, which is how a backend lets one identity read another's channel.
func DefaultPolicy(clientPublish []string) func(context.Context, AuthRequest) error {
	return func(_ context.Context, r AuthRequest) error {
		switch r.Action {
		case session.ActSubscribe:
			if !strings.HasPrefix(r.Channel, "$") || (r.Session != "" && r.Channel == SessionChannel(r.Session)) ||
				(r.User != "" && r.Channel == UserChannel(r.User)) || granted(r.Grants, r.Channel) {
				return nil
			}
		case session.ActPublish:
			if granted(r.Grants, r.Channel) || (!strings.HasPrefix(r.Channel, "$") && granted(clientPublish, r.Channel)) {
				return nil
			}
		case session.ActSend:
			return nil
		}
		return session.Errorf(session.CodeForbidden, "%s %q not allowed", r.Action, r.Channel)
	}
}

// handler implements session.Handler with the server's hooks.
type handler struct{ s *Server }

func (h handler) Authorize(ctx context.Context, c session.Claims, act session.Action, channel string) error {
	authz := h.s.cfg.Authorize
	if authz == nil {
		authz = DefaultPolicy(h.s.cfg.ClientPublish)
	}
	if act == session.ActSend && h.s.cfg.OnMessage == nil {
		return &session.Error{Code: session.CodeNoHandler, Reason: "this server takes no upstream messages"}
	}
	// Join and leave events of a channel are for those who may subscribe to the channel.
	if inner, ok := strings.CutPrefix(channel, "$presence:"); ok && act == session.ActSubscribe {
		if !h.s.presenceOn(inner) {
			return session.Errorf(session.CodeForbidden, "no presence on %q", inner)
		}
		channel = inner
	}
	return authz(ctx, AuthRequest{Action: act, Session: c.SID, User: c.User, Grants: c.Grants, Channel: channel})
}

func (h handler) Send(ctx context.Context, c session.Claims, f *session.ClientFrame) error {
	return h.s.cfg.OnMessage(ctx, Upstream{Session: c.SID, User: c.User, Client: c.CID, Seq: f.Seq, Data: f.Data, Binary: f.Bin})
}

func (h handler) Publish(ctx context.Context, _ session.Claims, f *session.ClientFrame) (session.Position, error) {
	m, err := h.s.publish(ctx, f.Ch, f.Data, f.Bin)
	if err != nil {
		return session.Position{}, err
	}
	return m.Pos, nil
}
