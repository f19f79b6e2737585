package transport

// The reader of an idle WebSocket runs only while the client has sent something (see
// wsSession.onReadable). gorilla's ReadMessage answers pings and passes pongs to their
// handler inside the read, then waits for a data message: a pong, which every client
// sends every heartbeat, would leave a goroutine blocked until the client next sends a
// frame of its own. So control frames at the head of the read buffer are handled here,
// and gorilla is called only for data messages.

// Frame opcodes and header bits (RFC 6455 §5.2).
const (
	wsOpClose  = 0x8
	wsOpPing   = 0x9
	wsOpPong   = 0xA
	wsFin      = 0x80
	wsRsvMask  = 0x70
	wsMaskBit  = 0x80
	wsMaxCtrl  = 125 // longest control frame payload
	wsMaskSize = 4
)

// ctrlFrame is a control frame found whole at the head of a buffer.
type ctrlFrame struct {
	op      byte
	size    int    // bytes the frame takes in the buffer, header included
	payload []byte // unmasked, a copy
}

// peekKind says what the head of a buffer holds.
type peekKind int

const (
	peekPartial peekKind = iota // not enough bytes to tell, or a control frame not whole yet
	peekControl                 // a whole, well-formed ping or pong: handle it here
	peekOther                   // a data frame or anything malformed: gorilla's
)

// peekFrame looks at the start of b, the bytes buffered from a client, without consuming
// anything. It recognises a whole, valid, masked ping or pong; a data frame and anything
// that breaks the rules go to gorilla, which answers them with the right close code.
// Close frames never reach it: closeGuard takes them out of the stream below (wsclose.go).
// It never reads past b.
func peekFrame(b []byte) (peekKind, ctrlFrame) {
	if len(b) < 2 {
		return peekPartial, ctrlFrame{}
	}
	op := b[0] & 0x0f
	if op != wsOpPing && op != wsOpPong {
		return peekOther, ctrlFrame{}
	}
	// A control frame must be final, without reserved bits, masked (from a client) and
	// short; gorilla reports each violation as a protocol error.
	if b[0]&wsFin == 0 || b[0]&wsRsvMask != 0 || b[1]&wsMaskBit == 0 || int(b[1]&0x7f) > wsMaxCtrl {
		return peekOther, ctrlFrame{}
	}
	n := int(b[1] & 0x7f)
	size := 2 + wsMaskSize + n
	if len(b) < size {
		return peekPartial, ctrlFrame{}
	}
	mask := b[2 : 2+wsMaskSize]
	payload := make([]byte, n)
	for i := range payload {
		payload[i] = b[2+wsMaskSize+i] ^ mask[i%wsMaskSize]
	}
	return peekControl, ctrlFrame{op: op, size: size, payload: payload}
}
