package session

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// Frame types; PROTOCOL.md §3.
const (
	FrameHello = "hello"
	FrameMsg   = "msg"
	FrameSub   = "sub"
	FrameReset = "reset"
	FrameUnsub = "unsub"
	FramePing  = "ping"
	FramePong  = "pong"
	FrameAck   = "ack"
	FrameClose = "close"
	FrameSend  = "send"
	FramePub   = "pub"
)

// ClientFrame is a frame sent by a client, as DecodeClientFrame validated it.
type ClientFrame struct {
	T    string          `json:"t"`
	Seq  uint64          `json:"seq,omitempty"`
	Ch   string          `json:"ch,omitempty"`
	Ep   string          `json:"ep,omitempty"`
	Off  uint64          `json:"off,omitempty"`
	Data json.RawMessage `json:"d,omitempty"`
	Bin  []byte          `json:"b,omitempty"`
}

// Position returns the position a sub frame asks to resume after (zero: from now).
func (f *ClientFrame) Position() Position { return Position{Epoch: f.Ep, Offset: f.Off} }

// DecodeClientFrame parses and validates one client frame. maxPayload bounds the decoded
// payload of send and pub frames. Every error is an *Error naming the problem.
func DecodeClientFrame(data []byte, maxPayload int) (ClientFrame, error) {
	var f ClientFrame
	if i := InvalidUTF8At(data); i >= 0 {
		return f, Errorf(CodeInvalidPayload, "frame is not valid UTF-8 (byte %d)", i)
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return f, Errorf(CodeBadRequest, "malformed frame: %v", jsonProblem(err))
	}
	return f, f.validate(maxPayload)
}

func (f *ClientFrame) validate(maxPayload int) error {
	switch f.T {
	case FrameSub:
		if err := CheckChannel(f.Ch); err != nil {
			return err
		}
		if f.Ep != "" && !ValidEpoch(f.Ep) {
			return Errorf(CodeBadRequest, "sub frame: bad epoch %.40q", f.Ep)
		}
		if f.Ep == "" && f.Off != 0 {
			return Errorf(CodeBadRequest, "sub frame: offset without epoch")
		}
	case FrameUnsub:
		return CheckChannel(f.Ch)
	case FramePong:
	case FrameSend, FramePub:
		if f.Seq == 0 {
			return Errorf(CodeBadRequest, "%s frame: seq must be an integer from 1", f.T)
		}
		if f.T == FramePub {
			if err := CheckChannel(f.Ch); err != nil {
				return err
			}
		}
		if (len(f.Data) == 0) == (f.Bin == nil) {
			return Errorf(CodeBadRequest, "%s frame: want exactly one of d (JSON) or b (base64)", f.T)
		}
		if n := len(f.Data) + len(f.Bin); n > maxPayload {
			return Errorf(CodeTooBig, "%s frame: payload of %d bytes exceeds the limit of %d", f.T, n, maxPayload)
		}
		if f.Data != nil {
			f.Data = compact(f.Data)
		}
	case "":
		return Errorf(CodeBadRequest, "frame has no type (t)")
	default:
		return Errorf(CodeBadRequest, "unknown frame type %.20q", f.T)
	}
	return nil
}

// jsonProblem keeps decoder errors short and free of Go type names.
func jsonProblem(err error) string {
	switch e := err.(type) {
	case *json.SyntaxError:
		return "invalid JSON at byte " + strconv.FormatInt(e.Offset, 10)
	case *json.UnmarshalTypeError:
		return "field " + strconv.Quote(e.Field) + " has the wrong type"
	}
	return "invalid JSON"
}

// compact returns JSON without insignificant whitespace, so that payloads fit on one SSE
// data line. Input has already been validated by encoding/json.
func compact(raw json.RawMessage) json.RawMessage {
	if bytes.IndexAny(raw, " \t\r\n") < 0 {
		return raw
	}
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}

// CompactPayload validates a JSON payload from a backend and compacts it. It refuses a
// payload whose strings hold bytes that are not UTF-8 with an error of code 1007
// (errors.Is(err, ErrInvalidUTF8)): encoding/json passes such bytes through a
// json.RawMessage unchanged, and a WebSocket text frame carrying them makes every browser
// that receives it fail the connection. Escapes are JSON's business, not UTF-8's: a lone
// surrogate written as the escape \udc00 is plain ASCII and passes unchanged (a browser's
// JSON.parse gives it to the app as it is; Go's encoding/json decodes it as U+FFFD).
func CompactPayload(raw []byte, maxPayload int) (json.RawMessage, error) {
	if len(raw) == 0 {
		return nil, Errorf(CodeBadRequest, "payload is empty")
	}
	if len(raw) > maxPayload {
		return nil, Errorf(CodeTooBig, "payload of %d bytes exceeds the limit of %d", len(raw), maxPayload)
	}
	if !json.Valid(raw) {
		return nil, Errorf(CodeBadRequest, "payload is not valid JSON")
	}
	// Valid JSON has nothing but ASCII outside its strings, so a byte that is not UTF-8
	// is always inside one.
	if i := InvalidUTF8At(raw); i >= 0 {
		return nil, Errorf(CodeInvalidPayload, "data: invalid UTF-8 in a string at byte %d", i)
	}
	return compact(raw), nil
}

// InvalidUTF8At returns the offset of the first byte of p that is not part of a valid
// UTF-8 sequence, or -1 when p is valid UTF-8.
func InvalidUTF8At(p []byte) int {
	if utf8.Valid(p) {
		return -1
	}
	for i := 0; i < len(p); {
		if p[i] < utf8.RuneSelf {
			i++
			continue
		}
		r, n := utf8.DecodeRune(p[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return -1
}

// repairedPayloads counts the messages whose payload Message.Frame had to repair; see
// RepairedPayloads.
var repairedPayloads atomic.Uint64

// RepairedPayloads returns how many messages this process has delivered with invalid
// UTF-8 in their payload replaced by U+FFFD (see Message.Frame). Every entry point
// refuses such payloads, so anything but 0 means that something wrote into the broker
// past them: another program writing Ferry's Redis keys, or a Broker implementation that
// changes payloads.
func RepairedPayloads() uint64 { return repairedPayloads.Load() }

// Message is one message on a channel. It is immutable once published and shared by every
// subscriber, queue and history that holds it; its frame is encoded once, on first use.
type Message struct {
	Channel string
	Pos     Position
	Data    json.RawMessage // compact JSON; nil when Bin is set
	Bin     []byte
	Time    int64 // publish time, Unix milliseconds

	once    sync.Once
	frame   []byte
	eventID string
	payload json.RawMessage // Data as delivered: repaired if it was not UTF-8
}

// Size is the number of payload bytes of m.
func (m *Message) Size() int { return len(m.Data) + len(m.Bin) }

// Frame returns the msg frame of m, encoded once for all subscribers.
//
// A frame never carries invalid UTF-8: it travels in WebSocket text frames and SSE
// events, where a single bad byte fails the connection of every subscriber (and, since
// resume replays it from history, every reconnection after). The entry points refuse
// such payloads; one that reaches a message anyway (through a broker written by another
// program) is delivered at its position with each invalid sequence replaced by U+FFFD,
// so the client's cursor moves past it and nothing is skipped. RepairedPayloads counts
// them. It costs one utf8.Valid per message, not per subscriber.
func (m *Message) Frame() []byte {
	m.once.Do(m.encode)
	return m.frame
}

// Payload returns Data as subscribers receive it: with any invalid UTF-8 replaced by
// U+FFFD, as in Frame. It is nil for a binary message.
func (m *Message) Payload() json.RawMessage {
	m.once.Do(m.encode)
	return m.payload
}

// EventID is the SSE id of m: "<channel>=<epoch>.<offset>".
func (m *Message) EventID() string {
	m.once.Do(m.encode)
	return m.eventID
}

func (m *Message) encode() {
	m.payload = m.Data
	if m.Bin == nil && !utf8.Valid(m.Data) {
		// Inside a JSON string (the only place valid JSON has bytes >= 0x80), a
		// replacement keeps the JSON valid.
		m.payload = bytes.ToValidUTF8(m.Data, []byte("\uFFFD"))
		repairedPayloads.Add(1)
	}
	// Channel names and epochs come from restricted character sets (ValidChannel,
	// ValidEpoch), so they need no JSON escaping; the payload is already compact JSON.
	b := make([]byte, 0, 48+len(m.Channel)+len(m.Pos.Epoch)+len(m.payload)+base64.StdEncoding.EncodedLen(len(m.Bin)))
	b = append(b, `{"t":"msg","ch":"`...)
	b = append(b, m.Channel...)
	b = append(b, `","ep":"`...)
	b = append(b, m.Pos.Epoch...)
	b = append(b, `","off":`...)
	b = strconv.AppendUint(b, m.Pos.Offset, 10)
	if m.Bin != nil {
		b = append(b, `,"b":"`...)
		b = base64.StdEncoding.AppendEncode(b, m.Bin)
		b = append(b, `"}`...)
	} else {
		b = append(b, `,"d":`...)
		b = append(b, m.payload...)
		b = append(b, '}')
	}
	m.frame = b
	m.eventID = m.Channel + "=" + m.Pos.String()
}

// Outgoing is one frame on its way to a client. It is made by MessageFrame (a msg frame,
// with Msg set, whose EventID becomes the SSE id line) or by ServerFrame.Encode (every
// other frame), and carries from then on what transports and cursors need to know of it
// without decoding JSON: its Kind and, for a frame that moves a client's cursor, the
// channel and position it moves it to (see Moves).
type Outgoing struct {
	JSON []byte
	Msg  *Message
	Kind FrameKind
	// ctl is what a sub, reset, ping or close frame says besides its type (see Control);
	// nil for every other frame (msg frames have Msg). A pointer keeps Outgoing small for
	// the queues: such frames are rare next to msg frames.
	ctl *control
}

// EventID is the SSE id of o: its message's (Message.EventID) for a msg frame, "" for
// every other frame. It is derived rather than stored: every queued frame is copied by
// each batch, so Outgoing stays at 48 bytes.
func (o Outgoing) EventID() string {
	if o.Msg == nil {
		return ""
	}
	return o.Msg.EventID()
}

// Control is what a control frame says, for a transport that writes it in a form of its
// own instead of its JSON: the dashboard stream (PROTOCOL.md §5) writes resets and closes
// as events named after them, and pings as comments. The zero value is what a frame
// without these details says.
type Control struct {
	Channel string   // of a sub or reset frame
	Pos     Position // of a sub or reset frame
	Code    Code     // of a close frame
	Reason  string   // of a reset or close frame
	TS      int64    // of a ping frame: its time, Unix milliseconds
}

// control is a Control and whether the frame moves a client's cursor (Moves).
type control struct {
	Control
	moves bool
}

// Control returns what o says besides its type: the channel and position of a sub or
// reset frame, the code and reason of a close, the time of a ping. It is zero for every
// other frame; a msg frame's details are its Msg.
func (o Outgoing) Control() Control {
	if o.ctl == nil {
		return Control{}
	}
	return o.ctl.Control
}

// FrameKind is the type of a server frame, known from its creation.
type FrameKind uint8

// The kinds of server frames; PROTOCOL.md §3. KindOther is a frame whose type this
// package does not list (none of its own).
const (
	KindOther FrameKind = iota
	KindMsg
	KindHello
	KindSub
	KindReset
	KindUnsub
	KindPing
	KindAck
	KindClose
)

// frameKinds maps a frame type to its kind.
var frameKinds = map[string]FrameKind{
	FrameMsg: KindMsg, FrameHello: KindHello, FrameSub: KindSub,
	FrameReset: KindReset, FrameUnsub: KindUnsub, FramePing: KindPing,
	FrameAck: KindAck, FrameClose: KindClose,
}

// MessageFrame returns the msg frame of m on its way to a client.
func MessageFrame(m *Message) Outgoing {
	return Outgoing{JSON: m.Frame(), Msg: m, Kind: KindMsg}
}

// ServerFrame is the generic form of the server's control frames (everything but msg).
type ServerFrame struct {
	T      string   `json:"t"`
	SID    string   `json:"sid,omitempty"`
	V      int      `json:"v,omitempty"`
	Tr     string   `json:"tr,omitempty"`
	TS     int64    `json:"ts,omitempty"`
	HB     int64    `json:"hb,omitempty"`
	Ch     string   `json:"ch,omitempty"`
	Ep     string   `json:"ep,omitempty"`
	Off    *uint64  `json:"off,omitempty"`
	Seq    uint64   `json:"seq,omitempty"`
	Dup    bool     `json:"dup,omitempty"`
	Err    *errBody `json:"err,omitempty"`
	Code   Code     `json:"code,omitempty"`
	Reason string   `json:"reason,omitempty"`
}

type errBody struct {
	Code   Code   `json:"code"`
	Reason string `json:"reason"`
}

// Encode marshals f. Control frames are rare next to msg frames, so encoding/json is fine.
// The frame keeps its kind and what a transport may need of it without reading the JSON
// again (see Outgoing.Moves and Outgoing.Control).
func (f *ServerFrame) Encode() Outgoing {
	b, err := json.Marshal(f)
	if err != nil {
		panic("session: encoding a server frame: " + err.Error()) // only plain types inside
	}
	o := Outgoing{JSON: b, Kind: frameKinds[f.T]}
	switch o.Kind {
	case KindSub, KindReset:
		c := &control{Control: Control{Channel: f.Ch, Reason: f.Reason}}
		if f.Off != nil {
			c.Pos = Position{Epoch: f.Ep, Offset: *f.Off}
			c.moves = f.Ep != ""
		}
		o.ctl = c
	case KindPing:
		o.ctl = &control{Control: Control{TS: f.TS}}
	case KindClose:
		o.ctl = &control{Control: Control{Code: f.Code, Reason: f.Reason}}
	}
	return o
}

// PingFrame is (&ServerFrame{T: FramePing, TS: ts, Seq: seq}).Encode(), the same bytes,
// without encoding/json: every attachment sends one every heartbeat, ten thousand
// attachments some seven hundred a second. TestPingFrameMatchesEncode compares the two.
func PingFrame(seq uint64, ts int64) Outgoing {
	b := make([]byte, 0, len(`{"t":"ping","ts":,"seq":}`)+2*20)
	b = append(b, `{"t":"ping"`...)
	if ts != 0 {
		b = strconv.AppendInt(append(b, `,"ts":`...), ts, 10)
	}
	if seq != 0 {
		b = strconv.AppendUint(append(b, `,"seq":`...), seq, 10)
	}
	b = append(b, '}')
	return Outgoing{JSON: b, Kind: KindPing, ctl: &control{Control: Control{TS: ts}}}
}

// Moves returns the channel and position the frame moves a client's cursor to: those of
// a msg frame, or of a sub or reset frame that carries a position.
func (o Outgoing) Moves() (ch string, pos Position, ok bool) {
	if o.Msg != nil {
		return o.Msg.Channel, o.Msg.Pos, true
	}
	if o.ctl != nil && o.ctl.moves {
		return o.ctl.Channel, o.ctl.Pos, true
	}
	return "", Position{}, false
}

func posFrame(t, ch string, p Position) Outgoing {
	off := p.Offset
	return (&ServerFrame{T: t, Ch: ch, Ep: p.Epoch, Off: &off}).Encode()
}

func closeFrame(e *Error) Outgoing {
	return (&ServerFrame{T: FrameClose, Code: e.Code, Reason: e.Reason}).Encode()
}

// Ack is the server's answer to one send or pub frame.
type Ack struct {
	Seq uint64
	Pos Position // set for an accepted pub
	Dup bool
	Err *Error
}

// Frame encodes a as an ack frame.
func (a Ack) Frame() Outgoing {
	f := ServerFrame{T: FrameAck, Seq: a.Seq, Dup: a.Dup}
	if !a.Pos.IsZero() {
		off := a.Pos.Offset
		f.Ep, f.Off = a.Pos.Epoch, &off
	}
	if a.Err != nil {
		f.Err = &errBody{Code: a.Err.Code, Reason: a.Err.Reason}
	}
	return f.Encode()
}
