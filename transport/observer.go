package transport

// Observer is told what the transports do, for metrics: the frames and bytes they move,
// how long-polls end and which requests they refuse. What sessions do is
// session.Observer's. Every method must be cheap and must not block: they run on the
// paths that move frames. Embed NopObserver to implement only some.
type Observer interface {
	// Sent counts frames and bytes written to clients.
	Sent(transport string, frames, bytes int)
	// Received counts frames and bytes read from clients.
	Received(transport string, frames, bytes int)
	// PollDone counts a long-poll by how it ended: "data", "timeout", "superseded",
	// "closed", "gone".
	PollDone(outcome string)
	// Rejected counts a refused request by reason: "auth", "session", "origin",
	// "forbidden", "limit", "rate", "draining", "store_busy" or "bad_request".
	Rejected(reason string)
}

// NopObserver ignores everything.
type NopObserver struct{}

func (NopObserver) Sent(string, int, int)     {}
func (NopObserver) Received(string, int, int) {}
func (NopObserver) PollDone(string)           {}
func (NopObserver) Rejected(string)           {}
