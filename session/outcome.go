package session

import (
	"crypto/rand"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The outcome of an upstream frame, as the Store records it with the frame's mark
// (Store.MarkUpstream) so that a duplicate gets the answer the first attempt got:
//
//	""              processed, nothing to add (a send that succeeded)
//	"?<attempt>"    being processed by that attempt (pendingOutcome); "?" alone from
//	                nodes before attempts were named
//	"p<ep>.<off>"   a pub published at that position
//	"e<code> <why>" refused or failed with that error (the reason cut to 200 bytes)
const (
	outcomeOK        = ""
	outcomePending   = "?"
	maxOutcomeReason = 200
)

// pendingOutcome returns the mark of one attempt at a frame: pending, with a random name.
// The attempt that finds its own mark already there (its store call was sent again after
// the answer was lost: go-redis retries a script on a timeout or a broken connection) knows
// that the mark is its own, not a concurrent duplicate's, and goes on processing the frame.
func pendingOutcome() string { return outcomePending + rand.Text() }

func positionOutcome(p Position) string { return "p" + p.String() }

func errorOutcome(e *Error) string {
	why := e.Reason
	if len(why) > maxOutcomeReason {
		why = why[:maxOutcomeReason]
		for !utf8.ValidString(why) {
			why = why[:len(why)-1]
		}
	}
	return "e" + strconv.Itoa(int(e.Code)) + " " + why
}

// replay is the ack of a duplicate of seq whose first attempt recorded outcome. An
// outcome it cannot read (a store's damage) is answered as a plain duplicate.
func replay(seq uint64, outcome string) Ack {
	ack := Ack{Seq: seq, Dup: true}
	switch {
	case strings.HasPrefix(outcome, outcomePending):
		return Ack{Seq: seq, Err: errInProgress}
	case strings.HasPrefix(outcome, "p"):
		if pos, err := ParsePosition(outcome[1:]); err == nil {
			ack.Pos = pos
		}
	case strings.HasPrefix(outcome, "e"):
		code, why, _ := strings.Cut(outcome[1:], " ")
		if n, err := strconv.ParseUint(code, 10, 16); err == nil {
			ack.Err = &Error{Code: Code(n), Reason: why}
		}
	}
	return ack
}
