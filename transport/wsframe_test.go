package transport

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/ferryrt/ferry/session"
	"github.com/gorilla/websocket"
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

// The pooled writer frames its batches itself (appendFrames); the plain one calls
// gorilla's WriteMessage, and WriteControl after a ping frame. Both must put the same
// bytes on the connection: compared here on a real upgraded connection, corked so that
// gorilla's writes gather where appendFrames's do, for payloads at the bounds of each
// length encoding (up to what the cork gathers before it writes; past it, below). And
// after a close frame neither writes anything.
func TestAppendServerFrameMatchesGorilla(t *testing.T) {
	_, result := corkedUpgrade(t, func(hj *corkHijacker, conn *websocket.Conn) error {
		c := hj.conn
		for _, n := range []int{0, 1, 125, 126, 127, 1000, tryBytes, 60000} {
			payload := make([]byte, n)
			for i := range payload {
				payload[i] = byte('a' + i%26)
			}
			for _, kind := range []session.FrameKind{session.KindMsg, session.KindPing} {
				out := []session.Outgoing{{JSON: payload, Kind: kind}, {JSON: []byte(`{"t":"ack","seq":1}`), Kind: session.KindAck}}
				c.cork()
				for _, o := range out { // as wsSession.Write does
					if err := conn.WriteMessage(websocket.TextMessage, o.JSON); err != nil {
						return err
					}
					if o.Kind == session.KindPing {
						if err := conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(time.Second)); err != nil {
							return err
						}
					}
				}
				want := bytes.Clone(*c.buf)
				*c.buf = (*c.buf)[:0]
				c.appendFrames(out)
				got := bytes.Clone(*c.buf)
				*c.buf = (*c.buf)[:0]
				if err := c.uncork(); err != nil {
					return err
				}
				if !bytes.Equal(got, want) {
					return fmt.Errorf("payload of %d bytes, kind %v: appendFrames wrote %d bytes (% x...), gorilla %d (% x...)",
						n, kind, len(got), got[:min(len(got), 12)], len(want), want[:min(len(want), 12)])
				}
			}
		}
		// Nothing follows a close frame, as gorilla refuses to write after its own: a
		// close gathered in the cork before a batch...
		ack := []session.Outgoing{{JSON: []byte(`{"t":"ack","seq":2}`), Kind: session.KindAck}}
		c.cork()
		if err := conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1002, "x"), time.Now().Add(time.Second)); err != nil {
			return err
		}
		gathered := len(*c.buf)
		c.appendFrames(ack)
		after := len(*c.buf)
		if err := c.uncork(); err != nil {
			return err
		}
		if after != gathered {
			return fmt.Errorf("%d bytes framed after a close frame", after-gathered)
		}
		// ...and a close written at once, before the batch was corked.
		c.cork()
		c.appendFrames(ack)
		after = len(*c.buf)
		c.uncork()
		if after != 0 {
			return fmt.Errorf("%d bytes framed after a close frame had gone out", after)
		}
		return nil
	})
	if err := <-result; err != nil {
		t.Fatal(err)
	}
}

// Past 65,535 bytes the length takes 8 bytes (RFC 6455 §5.2).
func TestAppendServerFrameLongLength(t *testing.T) {
	got := appendServerFrame(nil, wsOpText, make([]byte, 0x10000))
	want := []byte{wsFin | wsOpText, 127, 0, 0, 0, 0, 0, 1, 0, 0}
	if !bytes.Equal(got[:10], want) || len(got) != 10+0x10000 {
		t.Fatalf("header % x, length %d; want % x and %d", got[:10], len(got), want, 10+0x10000)
	}
}

// BenchmarkFrameBatch frames a batch of 8 messages of 150 bytes into the cork, as the
// plain writer does (gorilla) and as the pooled one does (append); the write itself is
// left out.
func BenchmarkFrameBatch(b *testing.B) {
	type server struct {
		conn *websocket.Conn
		cork *corkConn
	}
	got := make(chan server, 1)
	release := make(chan struct{})
	defer close(release) // before corkedUpgrade's cleanup closes the server
	corkedUpgrade(b, func(hj *corkHijacker, conn *websocket.Conn) error {
		got <- server{conn, hj.conn}
		<-release
		return nil
	})
	s := <-got
	out := make([]session.Outgoing, 8)
	for i := range out {
		out[i] = session.Outgoing{JSON: bytes.Repeat([]byte("x"), 150), Kind: session.KindMsg}
	}
	frame := map[string]func(){
		"gorilla": func() {
			for _, o := range out {
				s.conn.WriteMessage(websocket.TextMessage, o.JSON)
			}
		},
		"append": func() { s.cork.appendFrames(out) },
	}
	for _, mode := range []string{"gorilla", "append"} {
		b.Run(mode, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.cork.cork()
				frame[mode]()
				*s.cork.buf = (*s.cork.buf)[:0]
				s.cork.uncork()
			}
		})
	}
}
