package transport

import (
	"encoding/binary"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/ferryrt/ferry/session"
)

// The WebSocket close handshake (RFC 6455 §5.5.1, §7).
//
// gorilla answers a client's close frame inside its read, and gets three things wrong for
// Ferry: a 1-byte close payload (which the RFC makes a protocol error) is answered as an
// empty close, a reason that is not UTF-8 fails with 1002 instead of 1007, and nothing
// tells the caller that the client's close has arrived, so the server can't close TCP at
// once. closeGuard therefore sits between the socket and gorilla's read buffer, in both
// I/O modes: it follows the frame boundaries of the byte stream, passes every frame on
// except close frames, and turns a close frame into the error of the read that reaches
// it: *peerClose for a valid one, a *session.Error (1002 or 1007) for one that fails the
// connection. gorilla never sees a close frame, and neither does peekFrame. Both read the
// frames in wsframe.go; this file is the close handshake's policy.

// maxCloseReason is the longest reason a close frame carries: a control frame's payload
// is at most 125 bytes, two of which are the code.
const maxCloseReason = wsMaxCtrl - 2

// codeProtocolError is the WebSocket close code of a protocol violation. It is not in
// Ferry's table (session.Codes): only the WebSocket layer uses it, and a client treats it
// like any code below 4000 that isn't there, as a dropped connection.
const codeProtocolError session.Code = 1002

// closeHandshake bounds the wait for the client's close frame after the server's: a
// client that doesn't answer within it has its connection closed anyway. A variable for
// the tests, which make it long so that a server that waits for it is seen to (atomic:
// a test changes it between servers whose last goroutines it doesn't wait for).
var closeHandshake atomic.Int64

func init() { closeHandshake.Store(int64(closeGrace)) }

// peerClose is a valid close frame from the client: the read that reaches it fails with
// it, and the server answers with the same code, then closes TCP.
type peerClose struct {
	code   int // 1005 when the frame had no payload
	reason string
}

func (e *peerClose) Error() string {
	return "websocket: closed by the client with " + strconv.Itoa(e.code)
}

// judgeClose checks the payload of a client's close frame (RFC 6455 §5.5.1, §7.4).
func judgeClose(p []byte) error {
	switch {
	case len(p) == 0:
		return &peerClose{code: websocket.CloseNoStatusReceived}
	case len(p) == 1:
		return session.Errorf(codeProtocolError, "close frame: 1-byte payload")
	}
	code := int(binary.BigEndian.Uint16(p))
	if !validCloseCode(code) {
		return session.Errorf(codeProtocolError, "close frame: invalid code %d", code)
	}
	if !utf8.Valid(p[2:]) {
		return session.Errorf(session.CodeInvalidPayload, "close frame: reason is not valid UTF-8")
	}
	return &peerClose{code: code, reason: string(p[2:])}
}

// validCloseCode reports whether code may appear in a close frame: a code IANA has
// assigned for use in close frames (not 1004, reserved, nor 1005, 1006 and 1015, which
// only report what happened locally), or one of the ranges for libraries (3000-3999) and
// applications (4000-4999).
func validCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// closeReason makes a reason fit a close frame: valid UTF-8, cut at a character
// boundary to at most maxCloseReason bytes.
func closeReason(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= maxCloseReason {
		return s
	}
	i := maxCloseReason
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}

// writeClose sends a close frame with e's code and reason. A code that a close frame
// must not carry (1006 is only ever reported locally) is sent as 1011; 1005 (the client
// closed without a code) is answered with an empty close frame, as the client sent.
func writeClose(conn *websocket.Conn, e *session.Error) {
	code := int(e.Code)
	var msg []byte
	switch {
	case code == websocket.CloseNoStatusReceived:
		msg = []byte{}
	case validCloseCode(code):
		msg = websocket.FormatCloseMessage(code, closeReason(e.Reason))
	default:
		msg = websocket.FormatCloseMessage(websocket.CloseInternalServerErr, closeReason(e.Reason))
	}
	conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
}
