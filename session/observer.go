package session

// Observer is told what sessions do, for metrics: negotiations, attachments, resets and
// upstream outcomes. What the transports move and refuse is transport.Observer's. Every
// method must be cheap and must not block: they run on the paths that move frames. Embed
// NopObserver to implement only some.
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
	// Upstream counts an upstream frame by outcome: "ok", "duplicate", "in_progress",
	// "refused", "rate_limited" (the session's upstream rate was exceeded) or
	// "unavailable" (the session store failed). The last two were not processed; the
	// client resends them.
	Upstream(outcome string)
}

// NopObserver ignores everything.
type NopObserver struct{}

func (NopObserver) Negotiated(bool)                      {}
func (NopObserver) Attached(string, string, string, int) {}
func (NopObserver) Detached(string, Code)                {}
func (NopObserver) Reset()                               {}
func (NopObserver) Upstream(string)                      {}
