package bridge

import (
	"github.com/ferryrt/ferry/session"
	"github.com/ferryrt/ferry/transport"
)

// The types of session and transport that Config and Server's methods use, named here so
// that a program using the bridge reads one package. Each is the same type as the one it
// names (an alias): values pass between the packages unchanged.
type (
	// Position is a message's place in its channel: the channel's epoch and the offset.
	Position = session.Position
	// Action is what AuthRequest asks to do: ActSubscribe, ActPublish or ActSend.
	Action = session.Action
	// Identity is who a request presents (Config.Authenticate's answer).
	Identity = session.Identity
	// Error is a close reason with its code: what Authorize, OnMessage and Authenticate
	// return to refuse with a specific code (see Errorf and docs/PROTOCOL.md §7).
	Error = session.Error
	// Limits bounds connections and new sessions per node and per client address.
	Limits = transport.Limits
	// Authenticator identifies a request (Config.Authenticate; see JWTAuthenticator).
	Authenticator = transport.Authenticator
	// IOMode selects pooled or plain connection I/O (Config.IO).
	IOMode = transport.IOMode
	// Code is a close code (docs/PROTOCOL.md §7).
	Code = session.Code
)

// The actions of an AuthRequest.
const (
	ActSubscribe = session.ActSubscribe
	ActPublish   = session.ActPublish
	ActSend      = session.ActSend
)

// The I/O modes of Config.IO.
const (
	IOPooled = transport.IOPooled
	IOPlain  = transport.IOPlain
)

// The close codes an application most often refuses with; the full table is session's
// (Code*) and docs/PROTOCOL.md §7.
const (
	CodeForbidden    = session.CodeForbidden
	CodeUnauthorized = session.CodeUnauthorized
	CodeBadRequest   = session.CodeBadRequest
)

// Errorf returns an *Error with code and a formatted reason, for Authorize, OnMessage
// and Authenticate to refuse with.
func Errorf(code Code, format string, args ...any) *Error {
	return session.Errorf(code, format, args...)
}
