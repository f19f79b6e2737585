// Package httpx is the one HTTP layer of Ferry's endpoints: how an error is answered (a
// close code and reason as JSON, with the HTTP status of the code), how a JSON body is
// read (application/json only, bounded, with an error that says what was wrong) and how
// a JSON answer is written. transport's handlers and bridge's /api/* and /events use it,
// so every endpoint answers a client's mistakes the same way.
//
// The origin and CORS policy is not here: it needs the transports' configuration
// (allowed origins, trusted proxies), so it is transport.Gate.
package httpx

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"

	"github.com/ferryrt/ferry/session"
)

// Status is the HTTP status an endpoint answers with when it reports code c.
func Status(c session.Code) int {
	switch c {
	case session.CodeBadRequest, session.CodeInvalidPayload:
		return http.StatusBadRequest
	case session.CodeUnauthorized, session.CodeSessionExpired, session.CodeTokenExpired:
		return http.StatusUnauthorized
	case session.CodeForbidden, session.CodePolicy:
		return http.StatusForbidden
	case session.CodeTooBig:
		return http.StatusRequestEntityTooLarge
	case session.CodeRateLimited:
		return http.StatusTooManyRequests
	case session.CodeShutdown, session.CodeGoingAway, session.CodeReconnect:
		return http.StatusServiceUnavailable
	case session.CodeNoHandler:
		return http.StatusNotImplemented
	}
	return http.StatusInternalServerError
}

// ErrorBody is the JSON body of every HTTP error.
type ErrorBody struct {
	Code   session.Code `json:"code"`
	Reason string       `json:"reason"`
}

// StatusError is a close reason answered with an HTTP status other than its code's
// (405 for a wrong method, 415 for a wrong Content-Type, 404, ...).
type StatusError struct {
	Status int
	Err    *session.Error
}

// WithStatus returns err (as a *session.Error, see session.AsError) to be answered with
// status instead of the status of its code.
func WithStatus(status int, err error) *StatusError {
	return &StatusError{Status: status, Err: session.AsError(err)}
}

// Error returns the close reason's text.
func (e *StatusError) Error() string { return e.Err.Error() }

// Unwrap returns the close reason, so that errors.Is and errors.As see its code.
func (e *StatusError) Unwrap() error { return e.Err }

// WriteError answers err as an ErrorBody with the status of its close code, or the status
// of a *StatusError it wraps. An error that wraps no *session.Error is answered as 500,
// code 1011 "internal error" (session.AsError): its text is for the logs, not the client.
func WriteError(w http.ResponseWriter, err error) {
	e := session.AsError(err)
	status := Status(e.Code)
	var se *StatusError
	if errors.As(err, &se) {
		status = se.Status
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // reasons quote client input; JSON, not HTML, is the context
	enc.Encode(ErrorBody{Code: e.Code, Reason: e.Reason})
}

// MethodNotAllowed answers 405 (code 4400) with an Allow header.
func MethodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	WriteError(w, WithStatus(http.StatusMethodNotAllowed, session.Errorf(session.CodeBadRequest, "method not allowed: use %s", allow)))
}

// WriteJSON answers v as JSON, not to be cached.
func WriteJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}

// ReadJSON decodes a JSON body of at most limit bytes into v. Only application/json is
// accepted (415 otherwise), which also turns away the cross-site "simple" POSTs
// (text/plain, form encodings) that a browser sends without a preflight. A body over the
// limit is code 1009 (413); one that is not JSON for v is 4400 and what names v's shape.
// optional allows an empty body, leaving v as it is. Errors are for WriteError.
func ReadJSON(w http.ResponseWriter, r *http.Request, limit int64, v any, optional bool) error {
	if r.ContentLength == 0 && optional {
		return nil
	}
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		return WithStatus(http.StatusUnsupportedMediaType, session.Errorf(session.CodeBadRequest, "Content-Type must be application/json, not %.40q", ct))
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return session.Errorf(session.CodeTooBig, "body exceeds %d bytes", limit)
		}
		return session.Errorf(session.CodeBadRequest, "reading body: %v", err)
	}
	if len(body) == 0 && optional {
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return session.Errorf(session.CodeBadRequest, "malformed JSON body")
	}
	return nil
}
