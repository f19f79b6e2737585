package session

import (
	"encoding/json"
	"errors"
	"testing"
	"unicode/utf8"
)

// A backend payload whose strings hold bytes that are not UTF-8 is refused with 1007 and
// a reason naming the byte; escapes (even of a lone surrogate) are ASCII and pass.
func TestCompactPayloadUTF8(t *testing.T) {
	for _, tc := range []struct {
		in     string
		code   Code
		reason string
	}{
		{`{"s":"a` + "\xff\xfe" + `b"}`, CodeInvalidPayload, "data: invalid UTF-8 in a string at byte 7"},
		{`["ok","` + "\xe2\x82" + `"]`, CodeInvalidPayload, "data: invalid UTF-8 in a string at byte 7"}, // truncated sequence
		{`"` + "\xed\xa0\x80" + `"`, CodeInvalidPayload, "data: invalid UTF-8 in a string at byte 1"},    // a surrogate, encoded
		{`{"s":"` + "\xff" + `"` + "\xff" + `}`, CodeBadRequest, "payload is not valid JSON"},
		{`{"s":"\udc00"}`, 0, ""},
		{`{"s":"héllo €𝄞"}`, 0, ""},
	} {
		out, err := CompactPayload([]byte(tc.in), 1024)
		if tc.code == 0 {
			if err != nil || string(out) != tc.in {
				t.Errorf("%q: %q, %v; want it unchanged", tc.in, out, err)
			}
			continue
		}
		var e *Error
		if !errors.As(err, &e) || e.Code != tc.code || e.Reason != tc.reason {
			t.Errorf("%q: %v; want %d %q", tc.in, err, tc.code, tc.reason)
		}
		if got := errors.Is(err, ErrInvalidUTF8); got != (tc.code == CodeInvalidPayload) {
			t.Errorf("%q: errors.Is(err, ErrInvalidUTF8) = %v", tc.in, got)
		}
	}
}

func TestInvalidUTF8At(t *testing.T) {
	for in, want := range map[string]int{"": -1, "abc": -1, "é€": -1, "ab\xff": 2, "é\xc3": 2, "\x80": 0} {
		if got := InvalidUTF8At([]byte(in)); got != want {
			t.Errorf("InvalidUTF8At(%q) = %d, want %d", in, got, want)
		}
	}
}

// A message that reaches the encoder with invalid UTF-8 (a broker written by another
// program) goes out once, at its position, as valid UTF-8 and valid JSON, and is counted.
func TestMessageFrameRepairsUTF8(t *testing.T) {
	before := RepairedPayloads()
	m := &Message{Channel: "c", Pos: Position{"e", 3}, Data: json.RawMessage(`{"s":"a` + "\xff\xfe" + `b"}`)}
	f := m.Frame()
	if !utf8.Valid(f) || !json.Valid(f) {
		t.Fatalf("frame %q is not valid UTF-8 JSON", f)
	}
	if want := `{"t":"msg","ch":"c","ep":"e","off":3,"d":{"s":"a` + "\uFFFD" + `b"}}`; string(f) != want {
		t.Errorf("frame %s, want %s", f, want)
	}
	if string(m.Payload()) != `{"s":"a`+"\uFFFD"+`b"}` {
		t.Errorf("payload %q", m.Payload())
	}
	m.Frame()
	if n := RepairedPayloads() - before; n != 1 {
		t.Errorf("RepairedPayloads moved by %d, want 1 (once per message, not per call)", n)
	}
	ok := &Message{Channel: "c", Pos: Position{"e", 4}, Data: json.RawMessage(`"fine"`)}
	if ok.Frame(); RepairedPayloads()-before != 1 || string(ok.Payload()) != `"fine"` {
		t.Errorf("a valid payload was repaired")
	}
}
