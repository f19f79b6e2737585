package session

import (
	"strconv"
	"strings"
)

// Limits on what a client may present; PROTOCOL.md §1.
const (
	MaxChannelLen = 200
	MaxEpochLen   = 16
	MaxCursorLen  = 8192
)

// Position is a place in a channel: its epoch and the offset of a message (0 before the
// first message).
type Position struct {
	Epoch  string `json:"ep"`
	Offset uint64 `json:"off"`
}

// String returns the text form "<epoch>.<offset>", or "" for the zero Position.
func (p Position) String() string {
	if p.Epoch == "" {
		return ""
	}
	return p.Epoch + "." + strconv.FormatUint(p.Offset, 10)
}

// IsZero reports whether p names no position ("from now").
func (p Position) IsZero() bool { return p.Epoch == "" }

// ParsePosition parses the text form of a position. The empty string is the zero Position.
func ParsePosition(s string) (Position, error) {
	if s == "" {
		return Position{}, nil
	}
	dot := strings.IndexByte(s, '.')
	if dot < 0 {
		return Position{}, Errorf(CodeBadRequest, "bad position %.40q: want <epoch>.<offset>", s)
	}
	ep, off := s[:dot], s[dot+1:]
	if !ValidEpoch(ep) {
		return Position{}, Errorf(CodeBadRequest, "bad position %.40q: epoch must be 1-%d letters or digits", s, MaxEpochLen)
	}
	n, err := strconv.ParseUint(off, 10, 64)
	if err != nil || off[0] == '+' {
		return Position{}, Errorf(CodeBadRequest, "bad position %.40q: offset must be a decimal integer", s)
	}
	return Position{Epoch: ep, Offset: n}, nil
}

// ValidEpoch reports whether s is a well-formed epoch.
func ValidEpoch(s string) bool {
	if len(s) == 0 || len(s) > MaxEpochLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// ValidChannel reports whether name is a well-formed channel name. The character set keeps
// names safe in SSE id and event lines, cursors and URLs without escaping rules of their own.
func ValidChannel(name string) bool {
	if len(name) == 0 || len(name) > MaxChannelLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '_', c == '-', c == ':', c == '.', c == '@', c == '/', c == '#', c == '$':
		default:
			return false
		}
	}
	return true
}

// CheckChannel returns a bad-request error naming the problem if name is not valid.
func CheckChannel(name string) error {
	if !ValidChannel(name) {
		return Errorf(CodeBadRequest, "bad channel name %.40q: want 1-%d characters from A-Z a-z 0-9 _ - : . @ / # $", name, MaxChannelLen)
	}
	return nil
}

// CursorEntry is one channel of a cursor and the position to resume it after; a zero
// Position means "from now".
type CursorEntry struct {
	Channel  string
	Position Position
}

// Cursor lists the channels of an attachment, in the client's order.
type Cursor []CursorEntry

// ParseCursor parses "ch=epoch.offset,ch2=,..." with at most maxChannels entries. A
// channel listed twice is an error: its two positions could disagree.
func ParseCursor(s string, maxChannels int) (Cursor, error) {
	if s == "" {
		return nil, nil
	}
	if len(s) > MaxCursorLen {
		return nil, Errorf(CodeBadRequest, "cursor too long: %d bytes, at most %d", len(s), MaxCursorLen)
	}
	n := strings.Count(s, ",") + 1
	if n > maxChannels {
		return nil, Errorf(CodeBadRequest, "cursor lists %d channels, at most %d allowed", n, maxChannels)
	}
	c := make(Cursor, 0, n)
	seen := make(map[string]struct{}, n)
	for part := range strings.SplitSeq(s, ",") {
		eq := strings.LastIndexByte(part, '=')
		if eq < 0 {
			return nil, Errorf(CodeBadRequest, "bad cursor entry %.40q: want <channel>=<position>", part)
		}
		ch := part[:eq]
		if err := CheckChannel(ch); err != nil {
			return nil, err
		}
		if _, dup := seen[ch]; dup {
			return nil, Errorf(CodeBadRequest, "cursor lists channel %q twice", ch)
		}
		seen[ch] = struct{}{}
		pos, err := ParsePosition(part[eq+1:])
		if err != nil {
			return nil, err
		}
		c = append(c, CursorEntry{Channel: ch, Position: pos})
	}
	return c, nil
}

// String formats c in the form ParseCursor reads.
func (c Cursor) String() string {
	var b strings.Builder
	for i, e := range c {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(e.Channel)
		b.WriteByte('=')
		b.WriteString(e.Position.String())
	}
	return b.String()
}

// Same reports whether c and d list the same channels at the same positions in the same
// order.
func (c Cursor) Same(d Cursor) bool {
	if len(c) != len(d) {
		return false
	}
	for i := range c {
		if c[i] != d[i] {
			return false
		}
	}
	return true
}

// Advance returns the cursor a client holds after reading out from an attachment that
// started at c: a msg, sub or reset frame of a channel in c moves that channel to the
// frame's position (PROTOCOL.md §3). c itself is not changed.
func (c Cursor) Advance(out []Outgoing) Cursor {
	next := append(Cursor(nil), c...)
	for _, o := range out {
		ch, pos, ok := o.Moves()
		if !ok {
			continue
		}
		for i := range next {
			if next[i].Channel == ch {
				next[i].Position = pos
				break
			}
		}
	}
	return next
}
