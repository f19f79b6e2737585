package session

import (
	"errors"
	"fmt"
	"strconv"
)

// Code is a close code from the one table shared by the server and the JS client
// (client-js/src/codes.js; a test keeps the two identical). The same code appears in a
// WebSocket close frame, a close frame on SSE or long-polling, an error in an ack or unsub
// frame, and the body of an HTTP error.
type Code uint16

// The codes Ferry itself uses. See docs/PROTOCOL.md §7 for what a client does with each.
const (
	CodeNormal         Code = 1000
	CodeGoingAway      Code = 1001
	CodeAbnormal       Code = 1006
	CodeInvalidPayload Code = 1007
	CodePolicy         Code = 1008
	CodeTooBig         Code = 1009
	CodeInternal       Code = 1011

	CodeReconnect       Code = 4000
	CodeSuperseded      Code = 4001
	CodeSlowConsumer    Code = 4002
	CodeShutdown        Code = 4003
	CodeHeartbeat       Code = 4004
	CodeSessionExpired  Code = 4005
	CodeTokenExpired    Code = 4006
	CodeRateLimited     Code = 4029
	CodeBadRequest      Code = 4100
	CodeUnauthorized    Code = 4101
	CodeForbidden       Code = 4103
	CodeNoHandler       Code = 4104
	CodeAppReconnectMin Code = 4500
	CodeAppTerminalMin  Code = 4750
	CodeAppMax          Code = 4999
)

// CodeInfo describes one row of the close-code table.
type CodeInfo struct {
	Name string
	// Reconnect reports whether a client should reconnect (and resume) after this code.
	Reconnect bool
}

// Codes is the close-code table. docs/PROTOCOL.md §7 and client-js/src/codes.js show the
// same rows.
var Codes = map[Code]CodeInfo{
	CodeNormal:         {"normal", false},
	CodeGoingAway:      {"going away", true},
	CodeAbnormal:       {"abnormal", true},
	CodeInvalidPayload: {"invalid payload", false},
	CodePolicy:         {"policy violation", false},
	CodeTooBig:         {"message too big", false},
	CodeInternal:       {"internal error", true},
	CodeReconnect:      {"reconnect", true},
	CodeSuperseded:     {"superseded", false},
	CodeSlowConsumer:   {"slow consumer", true},
	CodeShutdown:       {"server shutting down", true},
	CodeHeartbeat:      {"heartbeat timeout", true},
	CodeSessionExpired: {"session unknown or expired", true},
	CodeTokenExpired:   {"token expired", true},
	CodeRateLimited:    {"rate limited", true},
	CodeBadRequest:     {"bad request", false},
	CodeUnauthorized:   {"unauthorized", false},
	CodeForbidden:      {"forbidden", false},
	CodeNoHandler:      {"no upstream handler", false},
}

// Reconnect reports whether a client should reconnect after c. Codes outside the table
// follow the ranges of PROTOCOL.md §7: 4000-4099 and 4500-4749 reconnect, the rest of
// 4000-4999 is terminal. Other codes below 4000 never come from Ferry but from a proxy or
// the platform (1005, 1012, ...), so they count as a dropped connection.
func (c Code) Reconnect() bool {
	if info, ok := Codes[c]; ok {
		return info.Reconnect
	}
	return c < 4100 || (c >= CodeAppReconnectMin && c < CodeAppTerminalMin)
}

func (c Code) String() string {
	if info, ok := Codes[c]; ok {
		return strconv.Itoa(int(c)) + " " + info.Name
	}
	return strconv.Itoa(int(c))
}

// Error is a close reason: a code from the table and a message that names the problem. It
// is what ends an attachment, refuses a frame or fails a request, and it travels to the
// client unchanged.
type Error struct {
	Code   Code
	Reason string
}

// Errorf returns an *Error with a formatted reason.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Reason: fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string {
	if e.Reason == "" {
		return "ferry: " + e.Code.String()
	}
	return fmt.Sprintf("ferry: %s (%d)", e.Reason, e.Code)
}

// Is makes errors.Is(err, &Error{Code: c}) match any error with code c.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && (t.Reason == "" || t.Reason == e.Reason)
}

// Sentinel errors, usable with errors.Is.
var (
	ErrSuperseded   = &Error{Code: CodeSuperseded, Reason: "superseded by a newer attachment"}
	ErrSlowConsumer = &Error{Code: CodeSlowConsumer, Reason: "slow consumer: outbound queue full"}
	ErrShutdown     = &Error{Code: CodeShutdown, Reason: "server shutting down"}
	ErrSession      = &Error{Code: CodeSessionExpired, Reason: "session unknown or expired"}
	ErrNormal       = &Error{Code: CodeNormal, Reason: "closed"}
	// ErrInvalidUTF8 matches every error of code 1007: a payload or frame refused
	// because it is not valid UTF-8 (CompactPayload, DecodeClientFrame). Its reason is
	// empty, so errors.Is ignores the reason, which names the offending byte.
	ErrInvalidUTF8 = &Error{Code: CodeInvalidPayload}
)

// AsError converts any error into a close reason: an *Error in its chain is returned as is;
// anything else becomes an internal error that does not leak its text.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: CodeInternal, Reason: "internal error"}
}
