package session

import (
	"crypto/sha256"
	"encoding/hex"
)

// Client identities: PROTOCOL.md §3, "Upstream across sessions".
const (
	// MinClientIDLen and MaxClientIDLen bound a client identity. The lower bound keeps
	// identities unguessable enough not to collide by accident: a client draws at least 96
	// random bits (16 base64url characters); 128 bits (22 characters) is what to use.
	MinClientIDLen = 16
	MaxClientIDLen = 64
)

// CheckClientID validates a client identity (the cid of a negotiation): 16 to 64
// characters from the base64url alphabet (A-Z, a-z, 0-9, '-', '_'). Every error is an
// *Error with code 4100 naming the problem.
func CheckClientID(cid string) error {
	if len(cid) < MinClientIDLen || len(cid) > MaxClientIDLen {
		return Errorf(CodeBadRequest, "cid must be %d to %d characters, not %d", MinClientIDLen, MaxClientIDLen, len(cid))
	}
	for i := 0; i < len(cid); i++ {
		c := cid[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return Errorf(CodeBadRequest, "cid has the character %q at %d: only A-Z, a-z, 0-9, '-' and '_' are allowed", c, i)
		}
	}
	return nil
}

// DedupeKey names the dedupe window of c's upstream frames in the Store: "s:<sid>" for a
// session without a client identity, "c:<cid>" for an anonymous one with it, and
// "c:<cid>:<16 hex digits of the user's SHA-256>" for an authenticated one, so that an
// identity presented by another user can't mark (and so suppress) that user's frames.
// The key is at most 86 bytes of base64url characters, ':' and hex digits.
func DedupeKey(c Claims) string {
	if c.CID == "" {
		return "s:" + c.SID
	}
	if c.User == "" {
		return "c:" + c.CID
	}
	h := sha256.Sum256([]byte(c.User))
	return "c:" + c.CID + ":" + hex.EncodeToString(h[:8])
}
