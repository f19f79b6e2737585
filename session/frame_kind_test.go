package session

import (
	"encoding/json"
	"testing"
)

// Every frame knows its kind from its creation, and a frame that moves a client's cursor
// knows where to, without its JSON being read again; the JSON says the same.
func TestOutgoingKindAndPosition(t *testing.T) {
	off := uint64(7)
	m := &Message{Channel: "room:a", Pos: Position{Epoch: "e1", Offset: 3}, Data: json.RawMessage(`1`)}
	cases := []struct {
		name  string
		o     Outgoing
		kind  FrameKind
		t     string
		moves bool
		ch    string
		pos   Position
	}{
		{"msg", MessageFrame(m), KindMsg, FrameMsg, true, "room:a", m.Pos},
		{"sub", posFrame(FrameSub, "room:b", Position{Epoch: "e2", Offset: 5}), KindSub, FrameSub, true, "room:b", Position{Epoch: "e2", Offset: 5}},
		{"reset", (&ServerFrame{T: FrameReset, Ch: "room:c", Ep: "e3", Off: &off}).Encode(), KindReset, FrameReset, true, "room:c", Position{Epoch: "e3", Offset: 7}},
		{"sub without position", (&ServerFrame{T: FrameSub, Ch: "room:d"}).Encode(), KindSub, FrameSub, false, "", Position{}},
		{"ping", (&ServerFrame{T: FramePing, TS: 1}).Encode(), KindPing, FramePing, false, "", Position{}},
		{"close", closeFrame(Errorf(CodeHeartbeat, "x")), KindClose, FrameClose, false, "", Position{}},
		{"ack", Ack{Seq: 1, Pos: Position{Epoch: "e4", Offset: 1}}.Frame(), KindAck, FrameAck, false, "", Position{}},
		{"hello", (&ServerFrame{T: FrameHello, SID: "s"}).Encode(), KindHello, FrameHello, false, "", Position{}},
		{"unsub", (&ServerFrame{T: FrameUnsub, Ch: "room:e"}).Encode(), KindUnsub, FrameUnsub, false, "", Position{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.o.Kind != c.kind {
				t.Errorf("kind %d, want %d", c.o.Kind, c.kind)
			}
			var f struct{ T string }
			if err := json.Unmarshal(c.o.JSON, &f); err != nil || f.T != c.t {
				t.Errorf("JSON %s: type %q (%v), want %q", c.o.JSON, f.T, err, c.t)
			}
			ch, pos, ok := c.o.Moves()
			if ok != c.moves || ch != c.ch || pos != c.pos {
				t.Errorf("Moves() = %q %v %v, want %q %v %v", ch, pos, ok, c.ch, c.pos, c.moves)
			}
		})
	}
}
