package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"

	"github.com/ferryrt/ferry/session"
)

// anyFrame encodes a masked client frame of any length.
func anyFrame(b0 byte, payload []byte) []byte {
	out := []byte{b0}
	switch n := len(payload); {
	case n <= 125:
		out = append(out, wsMaskBit|byte(n))
	case n <= 0xffff:
		out = append(out, wsMaskBit|126, byte(n>>8), byte(n))
	default:
		out = append(out, wsMaskBit|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	mask := [4]byte{5, 6, 7, 8}
	out = append(out, mask[:]...)
	for i, c := range payload {
		out = append(out, c^mask[i%4])
	}
	return out
}

func closePayload(code int, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)
}

// readGuard reads everything a guard passes from in, delivered n bytes per read.
func readGuard(in []byte, n int) ([]byte, error) {
	g := newCloseGuard(iotest.HalfReader(&chunked{b: in, n: n}))
	out, err := io.ReadAll(g)
	return out, err
}

type chunked struct {
	b []byte
	n int
}

func (c *chunked) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), c.n)], c.b)
	c.b = c.b[k:]
	return k, nil
}

// The guard passes every frame but the client's close, which ends the stream with the
// right error, however the bytes are split between reads.
func TestCloseGuard(t *testing.T) {
	data := anyFrame(wsFin|0x1, []byte(`{"t":"send"}`))
	long := anyFrame(0x1, bytes.Repeat([]byte("a"), 300))         // 16-bit length
	huge := anyFrame(wsFin|0x0, bytes.Repeat([]byte("b"), 70000)) // 64-bit length
	ping := anyFrame(wsFin|wsOpPing, []byte("p"))
	before := bytes.Join([][]byte{data, long, ping, huge}, nil)
	for _, tc := range []struct {
		name  string
		close []byte
		code  int // of a *peerClose, or of the *session.Error that fails the connection
		fail  bool
	}{
		{"close 1000", anyFrame(wsFin|wsOpClose, closePayload(1000, "bye")), 1000, false},
		{"empty close", anyFrame(wsFin|wsOpClose, nil), 1005, false},
		{"app code", anyFrame(wsFin|wsOpClose, closePayload(4999, "")), 4999, false},
		{"1-byte payload", anyFrame(wsFin|wsOpClose, []byte{3}), 1002, true},
		{"code 1005", anyFrame(wsFin|wsOpClose, closePayload(1005, "")), 1002, true},
		{"code 999", anyFrame(wsFin|wsOpClose, closePayload(999, "")), 1002, true},
		{"code 2999", anyFrame(wsFin|wsOpClose, closePayload(2999, "")), 1002, true},
		{"reason not UTF-8", anyFrame(wsFin|wsOpClose, closePayload(1000, "\xff")), 1007, true},
		{"payload of 126", anyFrame(wsFin|wsOpClose, closePayload(1000, strings.Repeat("r", 124))), 1002, true},
		{"not final", anyFrame(wsOpClose, closePayload(1000, "")), 1002, true},
		{"unmasked", []byte{wsFin | wsOpClose, 2, 3, 232}, 1002, true},
	} {
		in := append(bytes.Clone(before), tc.close...)
		in = append(in, anyFrame(wsFin|0x1, []byte("after the close"))...)
		for _, n := range []int{1, 2, 3, 7, 100, len(in)} {
			out, err := readGuard(in, n)
			if !bytes.Equal(out, before) {
				t.Fatalf("%s, reads of %d: passed %d bytes, want the %d before the close", tc.name, n, len(out), len(before))
			}
			var pc *peerClose
			var se *session.Error
			switch {
			case !tc.fail && errors.As(err, &pc) && pc.code == tc.code:
			case tc.fail && errors.As(err, &se) && int(se.Code) == tc.code:
			default:
				t.Fatalf("%s, reads of %d: %v, want code %d", tc.name, n, err, tc.code)
			}
		}
	}
	if out, err := readGuard(before, 5); !bytes.Equal(out, before) || err != nil {
		t.Fatalf("without a close: %d bytes, %v", len(out), err)
	}
}

// In non-blocking mode a close frame that is not whole yet is reported as such, and the
// next read completes it.
func TestCloseGuardNonBlocking(t *testing.T) {
	cl := anyFrame(wsFin|wsOpClose, closePayload(1000, ""))
	g := newCloseGuard(&chunked{b: cl, n: 3})
	g.nonblock = true
	if n, err := g.Read(make([]byte, 64)); n != 0 || err != errCloseIncomplete {
		t.Fatalf("first read: %d, %v", n, err)
	}
	g.nonblock = false
	var pc *peerClose
	if _, err := g.Read(make([]byte, 64)); !errors.As(err, &pc) || pc.code != 1000 {
		t.Fatalf("second read: %v", err)
	}
}

// Reasons are cut at a character boundary, within 123 bytes, and made valid UTF-8.
func TestCloseReason(t *testing.T) {
	for _, in := range []string{"short", "x" + strings.Repeat("€", 60), strings.Repeat("é", 70), "a\xffb", strings.Repeat("𝄞", 40)} {
		got := closeReason(in)
		if len(got) > maxCloseReason || !utf8.ValidString(got) {
			t.Errorf("closeReason(%q) = %q: %d bytes, valid %v", in, got, len(got), utf8.ValidString(got))
		}
		if utf8.ValidString(in) && (!strings.HasPrefix(in, got) || (got != in && len(got) <= maxCloseReason-4)) {
			t.Errorf("closeReason(%q) = %q: not the longest prefix", in, got)
		}
	}
	if got := closeReason("a\xffb"); got != "a\uFFFDb" {
		t.Errorf("invalid UTF-8 became %q", got)
	}
}

// Whatever a client sends, the guard never panics, and what it passes (and whether it
// ends with the client's close) does not depend on how reads split the stream.
func FuzzCloseGuard(f *testing.F) {
	f.Add(anyFrame(wsFin|0x1, []byte("hi")), uint8(1))
	f.Add(append(anyFrame(wsFin|wsOpPing, nil), anyFrame(wsFin|wsOpClose, closePayload(1000, "x"))...), uint8(3))
	f.Add(anyFrame(wsFin|wsOpClose, []byte{3}), uint8(2))
	f.Add([]byte{0x81, 0xff, 0, 0, 0, 0, 0, 0, 0, 9, 1, 2, 3, 4}, uint8(5))
	f.Fuzz(func(t *testing.T, in []byte, n uint8) {
		whole, errWhole := readGuard(in, len(in)+1)
		split, errSplit := readGuard(in, int(n%16)+1)
		if !bytes.Equal(whole, split) || (errWhole == nil) != (errSplit == nil) {
			t.Fatalf("whole: %d bytes, %v; split by %d: %d bytes, %v", len(whole), errWhole, n%16+1, len(split), errSplit)
		}
		if len(whole) > len(in) {
			t.Fatalf("passed %d bytes of %d", len(whole), len(in))
		}
	})
}
