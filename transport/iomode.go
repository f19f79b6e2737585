package transport

import "fmt"

// IOMode selects how the transports serve their connections (Config.IO).
//
// DESIGN invariant 11: the fast path is never the only path. IOPooled holds no goroutine
// for an idle connection (netpoll reports readability, a worker pool writes); IOPlain is
// its goroutine-per-connection twin, the way net/http and gorilla serve connections out
// of the box. Both answer the same bytes, which the tests check by running every I/O test
// in both modes.
type IOMode uint8

const (
	// IOPooled serves idle WebSocket connections and SSE streams without a goroutine
	// (where the socket can be watched: not over TLS, and on Linux), and takes over the
	// keep-alive connections of long-polls when Config.Handoff is served. The default.
	IOPooled IOMode = iota
	// IOPlain serves every connection with goroutines of its own: a reader goroutine and
	// the session's writers for WebSocket, net/http's handler goroutine for SSE streams
	// and long-polls (no hijack, no take-over).
	IOPlain
)

// String names m as in configuration: "pooled" or "plain".
func (m IOMode) String() string {
	if m == IOPlain {
		return "plain"
	}
	return "pooled"
}

// ParseIOMode parses a mode as String names it: "pooled" or "plain" (for a flag or a
// configuration file).
func ParseIOMode(s string) (IOMode, error) {
	switch s {
	case "pooled":
		return IOPooled, nil
	case "plain":
		return IOPlain, nil
	}
	return IOPooled, fmt.Errorf("transport: unknown I/O mode %q: want pooled or plain", s)
}

// pooled reports whether c serves connections in the pooled mode.
func (c *Config) pooled() bool { return c.IO == IOPooled }
