package transport

import (
	"bytes"
	"testing"
)

// clientFrame encodes a masked frame as a client sends it.
func clientFrame(b0 byte, payload []byte, mask [4]byte) []byte {
	out := []byte{b0, wsMaskBit | byte(len(payload))}
	out = append(out, mask[:]...)
	for i, c := range payload {
		out = append(out, c^mask[i%4])
	}
	return out
}

func TestPeekFrame(t *testing.T) {
	mask := [4]byte{1, 2, 3, 4}
	ping := clientFrame(wsFin|wsOpPing, []byte("hi"), mask)
	pong := clientFrame(wsFin|wsOpPong, nil, mask)
	text := clientFrame(wsFin|0x1, []byte(`{"t":"send"}`), mask)
	for _, tc := range []struct {
		name string
		in   []byte
		kind peekKind
		op   byte
		size int
		data string
	}{
		{"empty", nil, peekPartial, 0, 0, ""},
		{"one byte", ping[:1], peekPartial, 0, 0, ""},
		{"ping without its payload yet", ping[:len(ping)-1], peekPartial, 0, 0, ""},
		{"ping", ping, peekControl, wsOpPing, len(ping), "hi"},
		{"ping then more", append(append([]byte{}, ping...), text...), peekControl, wsOpPing, len(ping), "hi"},
		{"empty pong", pong, peekControl, wsOpPong, len(pong), ""},
		{"text frame", text, peekOther, 0, 0, ""},
		{"close", clientFrame(wsFin|wsOpClose, []byte{3, 232}, mask), peekOther, 0, 0, ""},
		{"fragmented ping", clientFrame(wsOpPing, nil, mask), peekOther, 0, 0, ""},
		{"reserved bit", clientFrame(wsFin|0x40|wsOpPong, nil, mask), peekOther, 0, 0, ""},
		{"unmasked ping", []byte{wsFin | wsOpPing, 0}, peekOther, 0, 0, ""},
		{"ping longer than 125", []byte{wsFin | wsOpPing, wsMaskBit | 126, 0, 200}, peekOther, 0, 0, ""},
	} {
		kind, f := peekFrame(tc.in)
		if kind != tc.kind || (kind == peekControl && (f.op != tc.op || f.size != tc.size || string(f.payload) != tc.data)) {
			t.Errorf("%s: got %v %+v, want %v op %x size %d payload %q", tc.name, kind, f, tc.kind, tc.op, tc.size, tc.data)
		}
	}
}

// Whatever a client sends, peekFrame stays inside the buffer, leaves it as it was, and
// only claims frames that really are whole pings and pongs.
func FuzzPeekFrame(f *testing.F) {
	mask := [4]byte{9, 8, 7, 6}
	f.Add(clientFrame(wsFin|wsOpPing, []byte("hi"), mask))
	f.Add(clientFrame(wsFin|wsOpPong, nil, mask))
	f.Add(clientFrame(wsFin|0x1, []byte("{}"), mask))
	f.Add([]byte{wsFin | wsOpPing, wsMaskBit | 127, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		before := bytes.Clone(b)
		kind, fr := peekFrame(b)
		if !bytes.Equal(b, before) {
			t.Fatal("peekFrame changed its input")
		}
		if kind != peekControl {
			return
		}
		if fr.op != wsOpPing && fr.op != wsOpPong {
			t.Fatalf("claimed opcode %x", fr.op)
		}
		if fr.size > len(b) || fr.size != 2+wsMaskSize+len(fr.payload) || len(fr.payload) > wsMaxCtrl {
			t.Fatalf("size %d, payload %d, buffer %d", fr.size, len(fr.payload), len(b))
		}
		// Re-encoding with the frame's own mask gives back exactly its bytes.
		var m [4]byte
		copy(m[:], b[2:6])
		if got := clientFrame(b[0], fr.payload, m); !bytes.Equal(got, b[:fr.size]) {
			t.Fatalf("re-encoded %x, buffer %x", got, b[:fr.size])
		}
	})
}
