package transport

// The RFC 6455 framing that this package reads itself, under gorilla: the one parser of
// client frames besides gorilla's own. closeGuard follows the frame boundaries of the
// byte stream and takes the client's close frames out (the close handshake's policy is
// in wsclose.go); peekFrame finds whole pings and pongs at the head of the read buffer.
//
// The reader of an idle WebSocket runs only while the client has sent something (see
// wsSession.readPolled). gorilla's ReadMessage answers pings and passes pongs to their
// handler inside the read, then waits for a data message: a pong, which every client
// sends every heartbeat, would leave a goroutine blocked until the client next sends a
// frame of its own. So control frames at the head of the read buffer are handled here,
// and gorilla is called only for data messages. That works only because gorilla reads
// through the read buffer this package gives it (see corkHijacker, cork.go).

import (
	"encoding/binary"
	"errors"
	"io"

	"github.com/ferryrt/ferry/session"
)

// Frame opcodes and header bits (RFC 6455 §5.2).
const (
	wsOpText   = 0x1
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
	if badControlHeader(b[0], b[1]) {
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

// appendServerFrame appends a final, unmasked frame of opcode op holding payload to b:
// the bytes gorilla's WriteMessage (and WriteControl) put on a server connection without
// compression, which is how this package's connections run. The pooled writer frames a
// batch with it straight into the cork's buffer, one copy of each payload, where
// WriteMessage copies it into a writer of its own first; the plain I/O mode keeps
// WriteMessage, and TestAppendServerFrameMatchesGorilla holds the two to the same bytes.
func appendServerFrame(b []byte, op byte, payload []byte) []byte {
	n := len(payload)
	switch {
	case n <= 125:
		b = append(b, wsFin|op, byte(n))
	case n <= 0xffff:
		b = append(b, wsFin|op, 126, byte(n>>8), byte(n))
	default:
		b = append(b, wsFin|op, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}

// badControlHeader reports whether the first two bytes of a control frame break the
// rules gorilla enforces for every control frame: final, no reserved bits, masked (from a
// client), a payload of at most 125 bytes. Such a frame fails the connection.
func badControlHeader(b0, b1 byte) bool {
	return b0&wsFin == 0 || b0&wsRsvMask != 0 || b1&wsMaskBit == 0 || int(b1&0x7f) > wsMaxCtrl
}

// errCloseIncomplete is what a non-blocking read returns when everything it read belongs
// to a close frame that is not whole yet.
var errCloseIncomplete = errors.New("transport: close frame incomplete")

// closeGuard is the reader under gorilla's read buffer; see the top of this file. Only
// the goroutine that owns the connection's reading uses it.
type closeGuard struct {
	r io.Reader
	// nonblock makes Read return after one read of r: errCloseIncomplete when that
	// read held nothing but the start of a close frame (readPolled must not wait for the
	// rest).
	nonblock bool
	err      error // sticky, once the client's close frame has been read

	hdr     [14]byte // the current frame's header, as far as read
	nh      int      // header bytes read
	need    int      // header length, known from the second byte on (2 before)
	left    uint64   // payload bytes of the current frame still to come
	payload bool     // in the current frame's payload
	close   bool     // the current frame is a close frame: held here, not passed on
	ctl     [wsMaxCtrl]byte
	nctl    int
}

func newCloseGuard(r io.Reader) *closeGuard { return &closeGuard{r: r, need: 2} }

// Err returns the client's close (or the failure it calls for), once read.
func (g *closeGuard) Err() error { return g.err }

func (g *closeGuard) Read(p []byte) (int, error) {
	for {
		if g.err != nil {
			return 0, g.err
		}
		n, err := g.r.Read(p)
		n = g.filter(p[:n])
		switch {
		case n > 0:
			return n, err
		case err != nil:
			return 0, err
		case g.err != nil:
			return 0, g.err
		case g.nonblock:
			return 0, errCloseIncomplete
		}
	}
}

// filter follows the frames in b, which continues what earlier calls saw, and moves the
// bytes of every frame but close frames to the start of b; it returns their count.
func (g *closeGuard) filter(b []byte) int {
	w := 0
	for i := 0; i < len(b) && g.err == nil; {
		if g.payload {
			n := int(min(uint64(len(b)-i), g.left))
			if g.close {
				g.nctl += copy(g.ctl[g.nctl:], b[i:i+n])
			} else {
				w += copy(b[w:], b[i:i+n])
			}
			i += n
			g.left -= uint64(n)
			if g.left == 0 {
				g.endFrame()
			}
			continue
		}
		c := b[i]
		i++
		if g.nh == 0 {
			g.close = c&0x0f == wsOpClose
		}
		g.hdr[g.nh] = c
		g.nh++
		if !g.close {
			b[w] = c
			w++
		}
		if g.nh == 2 {
			g.need = 2 + extLenSize(g.hdr[1]&0x7f)
			if g.hdr[1]&wsMaskBit != 0 {
				g.need += wsMaskSize
			}
			// As gorilla does for every control frame: these fail the connection.
			if g.close && badControlHeader(g.hdr[0], g.hdr[1]) {
				g.err = session.Errorf(codeProtocolError, "close frame: not final, reserved bits, not masked or over 125 bytes")
				break
			}
		}
		if g.nh >= 2 && g.nh == g.need {
			g.left = payloadLen(g.hdr[:g.nh])
			g.payload = g.left > 0
			if !g.payload {
				g.endFrame()
			}
		}
	}
	return w
}

// extLenSize is the size of the extended payload length that a 7-bit length announces.
func extLenSize(l byte) int {
	switch l {
	case 126:
		return 2
	case 127:
		return 8
	}
	return 0
}

// payloadLen reads the payload length of a whole frame header.
func payloadLen(h []byte) uint64 {
	switch l := h[1] & 0x7f; l {
	case 126:
		return uint64(binary.BigEndian.Uint16(h[2:4]))
	case 127:
		return binary.BigEndian.Uint64(h[2:10])
	default:
		return uint64(l)
	}
}

// endFrame is called once a frame is whole: a close frame becomes g.err.
func (g *closeGuard) endFrame() {
	if g.close {
		mask := g.hdr[g.nh-wsMaskSize : g.nh]
		p := g.ctl[:g.nctl]
		for i := range p {
			p[i] ^= mask[i%wsMaskSize]
		}
		g.err = judgeClose(p)
	}
	g.nh, g.need, g.left, g.payload, g.close, g.nctl = 0, 2, 0, false, false, 0
}
