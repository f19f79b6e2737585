package transport

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/ferryrt/ferry/internal/httpx"
	"github.com/ferryrt/ferry/session"
	"github.com/ferryrt/ferry/transport/internal/netpoll"
)

// Negotiate handles POST /negotiate: it creates or resumes a session and tells the client
// the transports, timings and limits. PROTOCOL.md §2.
type Negotiate struct{ cfg *Config }

// NewNegotiate returns the negotiation handler.
func NewNegotiate(cfg Config) *Negotiate { return &Negotiate{cfg: cfg.withDefaults()} }

// NegotiateRequest is the optional body of a negotiation.
type NegotiateRequest struct {
	Session string `json:"session,omitempty"`
	// CID is the client identity (session.CheckClientID): a random ID the client draws
	// once and presents at every negotiation, so that the upstream frames it resends
	// after 4005, under a new session, are recognised as duplicates. PROTOCOL.md §3.
	CID string `json:"cid,omitempty"`
}

// NegotiateResponse is the answer to a negotiation.
type NegotiateResponse struct {
	V            int          `json:"v"`
	Session      string       `json:"session"`
	SID          string       `json:"sid"`
	Resumed      bool         `json:"resumed"`
	Transports   []string     `json:"transports"`
	HeartbeatMs  int64        `json:"heartbeatMs"`
	PollHoldMs   int64        `json:"pollHoldMs"`
	SessionTTLMs int64        `json:"sessionTtlMs"`
	Limits       ClientLimits `json:"limits"`
}

// ClientLimits are the bounds a client must respect.
type ClientLimits struct {
	MaxMessageBytes int   `json:"maxMessageBytes"`
	MaxChannels     int   `json:"maxChannels"`
	MaxBodyBytes    int64 `json:"maxBodyBytes"`
}

func (h *Negotiate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.cfg.cors(w, r) {
		return
	}
	if r.Method != http.MethodPost {
		methodNotAllowed(w, "POST")
		return
	}
	if err := h.cfg.Limiter.allowNegotiate(r); err != nil {
		h.cfg.logFailure(r, "negotiate", err)
		writeError(w, err)
		return
	}
	var req NegotiateRequest
	if err := httpx.ReadJSON(w, r, h.cfg.MaxBodyBytes, &req, true); err != nil {
		writeError(w, err)
		return
	}
	if req.CID != "" {
		if err := session.CheckClientID(req.CID); err != nil {
			h.cfg.logFailure(r, "negotiate", err)
			writeError(w, err)
			return
		}
	}
	var id session.Identity
	if h.cfg.Authenticate != nil {
		got, ok, err := h.cfg.Authenticate(r)
		if err == nil && !ok && !h.cfg.AllowAnonymous {
			err = session.Errorf(session.CodeUnauthorized, "authentication required: send a token (Authorization: Bearer, ?token= or cookie)")
		}
		if err != nil {
			h.cfg.logFailure(r, "negotiate", err)
			writeError(w, err)
			return
		}
		id = got
	}
	n, err := h.cfg.Manager.Negotiate(session.WithRemote(r.Context(), r.RemoteAddr), req.Session, id, req.CID)
	if err != nil {
		h.cfg.logFailure(r, "negotiate", err)
		writeError(w, err)
		return
	}
	mc := h.cfg.Manager.Params()
	h.answer(w, r, NegotiateResponse{
		V:            1,
		Session:      n.Credential,
		SID:          n.Claims.SID,
		Resumed:      n.Resumed,
		Transports:   h.cfg.Transports,
		HeartbeatMs:  mc.Heartbeat.Milliseconds(),
		PollHoldMs:   mc.PollHold.Milliseconds(),
		SessionTTLMs: mc.SessionTTL.Milliseconds(),
		Limits: ClientLimits{
			MaxMessageBytes: mc.MaxMessageBytes,
			MaxChannels:     mc.MaxChannels,
			MaxBodyBytes:    h.cfg.MaxBodyBytes,
		},
	})
}

// answer writes the negotiation's response and, on a plain HTTP/1.1 keep-alive connection
// when the Handoff is served, parks the connection until its next request (Handoff.park):
// a client's negotiation is followed by its attachment, often on another connection, so
// this one would otherwise wait idle in net/http with a goroutine and 8 KiB of buffers.
func (h *Negotiate) answer(w http.ResponseWriter, r *http.Request, resp NegotiateResponse) {
	body, _ := json.Marshal(resp)
	body = append(body, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Write(body)
	// The body was read to its end (httpx.ReadJSON), so the connection is between requests.
	if !h.cfg.pooled() || !h.cfg.Handoff.open() || r.ProtoMajor != 1 || r.ProtoMinor < 1 || r.TLS != nil || r.Close ||
		h.cfg.Manager.Draining() || !netpoll.Supported() {
		return
	}
	rc := http.NewResponseController(w)
	if rc.Flush() != nil {
		return
	}
	conn, brw, err := rc.Hijack()
	if err != nil {
		return
	}
	var rest []byte
	if c, ok := conn.(*prefixConn); ok { // handed back once already
		conn, rest = c.Conn, c.buf
	}
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		rest = append(append([]byte(nil), b...), rest...)
	}
	if len(rest) > 0 { // the next request came already
		h.cfg.Handoff.give(&prefixConn{Conn: conn, buf: rest})
		return
	}
	if !h.cfg.Handoff.park(conn, h.cfg.IdleTimeout) {
		h.cfg.Handoff.give(conn)
	}
}
