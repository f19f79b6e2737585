package session

// Observer is told what sessions do, for metrics. Every method must be cheap and must not
// block: they run on the paths that move frames. Embed NopObserver to implement only some.
type Observer interface {
	// Negotiated counts a negotiation that created (resumed=false) or resumed a session.
	Negotiated(resumed bool)
	// Attached counts a new attachment. from and reason are what the client says about
	// its previous transport ("" when it says nothing); resumed counts channels it resumes
	// from a position.
	Attached(transport, from, reason string, resumed int)
	// Detached counts the end of an attachment with the code that ended it.
	Detached(transport string, code Code)
	// Reset counts a subscription that history could not resume.
	Reset()
	// Upstream counts an upstream frame by outcome: "ok", "duplicate" or "refused".
	Upstream(outcome string)
	// Sent counts frames and bytes written to clients.
	Sent(transport string, frames, bytes int)
	// Received counts frames and bytes read from clients.
	Received(transport string, frames, bytes int)
	// PollDone counts a long-poll by how it ended: "data", "timeout", "superseded", "closed".
	PollDone(outcome string)
	// Rejected counts a refused request by reason: "auth", "origin", "limit", "rate",
	// "bad_request", "session".
	Rejected(reason string)
}

// NopObserver ignores everything.
type NopObserver struct{}

func (NopObserver) Negotiated(bool)                      {}
func (NopObserver) Attached(string, string, string, int) {}
func (NopObserver) Detached(string, Code)                {}
func (NopObserver) Reset()                               {}
func (NopObserver) Upstream(string)                      {}
func (NopObserver) Sent(string, int, int)                {}
func (NopObserver) Received(string, int, int)            {}
func (NopObserver) PollDone(string)                      {}
func (NopObserver) Rejected(string)                      {}
