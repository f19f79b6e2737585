package redis

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/ferryrt/ferry/session"
)

// Decoders for what the Redis broker reads back from Redis. Redis is shared: anyone with
// access can PUBLISH on a ferry:msg: channel or XADD to a stream, so every decoder checks
// what it gets and rejects the rest with an error (which the caller logs); none panics
// (see the Fuzz tests).

// errMalformed wraps every decoding error.
var errMalformed = errors.New("bridge: malformed redis data")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errMalformed}, args...)...)
}

// Payload kinds in streams and pub/sub messages.
const (
	kindJSON   = "d"
	kindBinary = "b"
)

// validBrokerChannel accepts the channel names the broker carries: client channels
// (session.ValidChannel) and the server's derived ones, such as presence channels, which
// may be a few characters longer.
func validBrokerChannel(name string) bool {
	const maxLen = session.MaxChannelLen + 16
	if len(name) == 0 || len(name) > maxLen {
		return false
	}
	if len(name) > session.MaxChannelLen {
		return session.ValidChannel(name[:session.MaxChannelLen]) && session.ValidChannel(name[session.MaxChannelLen:])
	}
	return session.ValidChannel(name)
}

// payload checks a payload of kind and returns it as the data or bin of a message.
func payload(kind string, p string) (json.RawMessage, []byte, error) {
	switch kind {
	case kindJSON:
		data, err := session.CompactPayload([]byte(p), math.MaxInt)
		if errors.Is(err, session.ErrInvalidUTF8) {
			// Past the entry points (written by another program, or an older Ferry):
			// delivered repaired (session.Message.Frame), not lost, since it holds a
			// position that readers of the channel must pass.
			var b bytes.Buffer
			json.Compact(&b, []byte(p)) // valid: CompactPayload checked JSON before UTF-8
			data, err = b.Bytes(), nil
		}
		if err != nil {
			return nil, nil, malformed("JSON payload: %v", err)
		}
		return data, nil, nil
	case kindBinary:
		return nil, []byte(p), nil
	}
	return nil, nil, malformed("payload kind %.10q, want d or b", kind)
}

// decodeWire decodes a message received on the pub/sub channel of channel:
// "<epoch>:<offset>:<time ms>:<d|b>:<payload>".
func decodeWire(channel, wire string) (*session.Message, error) {
	if !validBrokerChannel(channel) {
		return nil, malformed("channel name %.40q", channel)
	}
	parts := strings.SplitN(wire, ":", 5)
	if len(parts) != 5 {
		return nil, malformed("message on %s: want epoch:offset:time:kind:payload", channel)
	}
	if !session.ValidEpoch(parts[0]) {
		return nil, malformed("message on %s: epoch %.20q", channel, parts[0])
	}
	off, err := strconv.ParseUint(parts[1], 10, 64)
	if err != nil || off == 0 {
		return nil, malformed("message on %s: offset %.24q", channel, parts[1])
	}
	ms, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil {
		return nil, malformed("message on %s: time %.24q", channel, parts[2])
	}
	data, bin, err := payload(parts[3], parts[4])
	if err != nil {
		return nil, fmt.Errorf("message on %s: %w", channel, err)
	}
	return &session.Message{Channel: channel, Pos: session.Position{Epoch: parts[0], Offset: off}, Data: data, Bin: bin, Time: ms}, nil
}

// parseEntryID returns the offset of a log entry id "<offset>-0".
func parseEntryID(id string) (uint64, error) {
	s, ok := strings.CutSuffix(id, "-0")
	if !ok {
		return 0, malformed("log entry id %.40q, want <offset>-0", id)
	}
	off, err := strconv.ParseUint(s, 10, 64)
	if err != nil || off == 0 {
		return 0, malformed("log entry id %.40q, want <offset>-0", id)
	}
	return off, nil
}

// decodeEntry decodes a log entry of channel in epoch, as a script returns it:
// {id, {field, value, ...}}.
func decodeEntry(channel, epoch string, raw any) (*session.Message, error) {
	e, ok := raw.([]any)
	if !ok || len(e) != 2 {
		return nil, malformed("log entry of %s: want [id, fields]", channel)
	}
	id, ok := e[0].(string)
	if !ok {
		return nil, malformed("log entry of %s: id is not a string", channel)
	}
	off, err := parseEntryID(id)
	if err != nil {
		return nil, err
	}
	fields, ok := e[1].([]any)
	if !ok || len(fields)%2 != 0 {
		return nil, malformed("log entry %s of %s: fields", id, channel)
	}
	m := &session.Message{Channel: channel, Pos: session.Position{Epoch: epoch, Offset: off}}
	kind, p := "", ""
	for i := 0; i < len(fields); i += 2 {
		k, ok1 := fields[i].(string)
		v, ok2 := fields[i+1].(string)
		if !ok1 || !ok2 {
			return nil, malformed("log entry %s of %s: fields must be strings", id, channel)
		}
		switch k {
		case "t":
			ms, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return nil, malformed("log entry %s of %s: time %.24q", id, channel, v)
			}
			m.Time = ms
		case kindJSON, kindBinary:
			if kind != "" {
				return nil, malformed("log entry %s of %s: two payloads", id, channel)
			}
			kind, p = k, v
		}
	}
	if kind == "" {
		return nil, malformed("log entry %s of %s: no payload", id, channel)
	}
	if m.Data, m.Bin, err = payload(kind, p); err != nil {
		return nil, fmt.Errorf("log entry %s of %s: %w", id, channel, err)
	}
	return m, nil
}

// encodeNotice and decodeNotice carry attachment notices on the control channel:
// "attach <node> <sid> <attach id>".
func encodeNotice(node, sid, attachID string) string {
	return "attach " + node + " " + sid + " " + attachID
}

func decodeNotice(s string) (node, sid, attachID string, err error) {
	f := strings.Split(s, " ")
	if len(f) != 4 || f[0] != "attach" {
		return "", "", "", malformed("control message %.60q", s)
	}
	for _, v := range f[1:] {
		if len(v) == 0 || len(v) > 128 {
			return "", "", "", malformed("control message %.60q", s)
		}
	}
	return f[1], f[2], f[3], nil
}

// field returns the string value of a stream entry field; go-redis gives strings.
func field(values map[string]any, name string) (string, bool) {
	v, ok := values[name]
	if !ok {
		return "", false
	}
	s, ok := v.(string)
	return s, ok
}

// decodePublishEntry decodes an entry of the backend publish stream: field channel, and
// either data (JSON) or bin (bytes). maxBytes bounds the payload.
func decodePublishEntry(values map[string]any, maxBytes int) (channel string, data json.RawMessage, bin []byte, err error) {
	channel, ok := field(values, "channel")
	if !ok {
		return "", nil, nil, malformed("publish entry: no channel field")
	}
	if err := session.CheckChannel(channel); err != nil {
		return "", nil, nil, malformed("publish entry: %v", err)
	}
	d, hasData := field(values, "data")
	b, hasBin := field(values, "bin")
	if hasData == hasBin {
		return "", nil, nil, malformed("publish entry for %s: want exactly one of data (JSON) or bin", channel)
	}
	if hasBin {
		if len(b) > maxBytes {
			return "", nil, nil, malformed("publish entry for %s: %d bytes, at most %d", channel, len(b), maxBytes)
		}
		return channel, nil, []byte(b), nil
	}
	data, err = session.CompactPayload([]byte(d), maxBytes)
	if err != nil {
		return "", nil, nil, malformed("publish entry for %s: %v", channel, err)
	}
	return channel, data, nil, nil
}
