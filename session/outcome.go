package session

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// The outcome of an upstream frame, as the Store records it with the frame's mark
// (Store.MarkUpstream) so that a duplicate gets the answer the first attempt got:
//
//	""              processed, nothing to add (a send that succeeded)
//	"?"             being processed: a pub whose position is not known yet
//	"p<ep>.<off>"   a pub published at that position
//	"e<code> <why>" refused or failed with that error (the reason cut to 200 bytes)
const (
	outcomeOK        = ""
	outcomePending   = "?"
	maxOutcomeReason = 200
)

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
	case outcome == outcomePending:
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
