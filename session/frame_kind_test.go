package session

import (
	"encoding/json"
	"math"
	"testing"
	"unsafe"
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

// A control frame's details come with it, as its JSON says them: what the dashboard
// stream writes as events and comments of its own.
func TestOutgoingControl(t *testing.T) {
	off := uint64(9)
	cases := []struct {
		name string
		o    Outgoing
		want Control
	}{
		{"sub", posFrame(FrameSub, "a", Position{Epoch: "e1", Offset: 4}), Control{Channel: "a", Pos: Position{Epoch: "e1", Offset: 4}}},
		{"reset", (&ServerFrame{T: FrameReset, Ch: "b", Ep: "e2", Off: &off, Reason: "gone"}).Encode(), Control{Channel: "b", Pos: Position{Epoch: "e2", Offset: 9}, Reason: "gone"}},
		{"ping", (&ServerFrame{T: FramePing, Seq: 3, TS: 1234}).Encode(), Control{TS: 1234}},
		{"close", closeFrame(ErrRevoked), Control{Code: ErrRevoked.Code, Reason: ErrRevoked.Reason}},
		{"msg", MessageFrame(&Message{Channel: "c", Pos: Position{Epoch: "e", Offset: 1}, Data: json.RawMessage(`1`)}), Control{}},
		{"ack", Ack{Seq: 1}.Frame(), Control{}},
	}
	for _, c := range cases {
		if got := c.o.Control(); got != c.want {
			t.Errorf("%s: Control() = %+v, want %+v", c.name, got, c.want)
		}
		var f struct {
			Ch     string `json:"ch"`
			Code   Code   `json:"code"`
			Reason string `json:"reason"`
			TS     int64  `json:"ts"`
		}
		json.Unmarshal(c.o.JSON, &f)
		if c.o.Kind != KindMsg && (f.Ch != c.want.Channel || f.Code != c.want.Code || f.Reason != c.want.Reason || f.TS != c.want.TS) {
			t.Errorf("%s: JSON %s says otherwise than %+v", c.name, c.o.JSON, c.want)
		}
	}
}

// Every queued frame is copied by each batch a writer takes (Stream.Next), so what an
// Outgoing holds is paid per delivery: it stays at three words and a slice. A field that
// grows it belongs behind ctl, or derived from Msg as EventID is.
func TestOutgoingStaysSmall(t *testing.T) {
	if size := unsafe.Sizeof(Outgoing{}); size > 48 {
		t.Fatalf("Outgoing is %d bytes, want at most 48", size)
	}
	m := &Message{Channel: "room:a", Pos: Position{Epoch: "ep", Offset: 3}, Data: []byte(`1`)}
	if id := MessageFrame(m).EventID(); id != "room:a=ep.3" {
		t.Errorf("msg frame's event id %q", id)
	}
	ping := ServerFrame{T: FramePing, Seq: 1}
	if id := ping.Encode().EventID(); id != "" {
		t.Errorf("ping frame's event id %q, want none", id)
	}
}

// PingFrame writes by hand what Encode writes with encoding/json, for the values at the
// edges of each field: zero (left out), one, the largest, and a clock's milliseconds.
func TestPingFrameMatchesEncode(t *testing.T) {
	for _, seq := range []uint64{0, 1, 9, 10, 1 << 32, math.MaxUint64} {
		for _, ts := range []int64{0, 1, -1, 1700000000000, math.MaxInt64, math.MinInt64} {
			want := (&ServerFrame{T: FramePing, TS: ts, Seq: seq}).Encode()
			got := PingFrame(seq, ts)
			if string(got.JSON) != string(want.JSON) || got.Kind != want.Kind || got.Control() != want.Control() {
				t.Errorf("PingFrame(%d, %d) = %s %v %+v, Encode gives %s %v %+v",
					seq, ts, got.JSON, got.Kind, got.Control(), want.JSON, want.Kind, want.Control())
			}
		}
	}
}
