package brokertest

import (
	"context"
	"testing"

	"github.com/ferryrt/ferry/bridge/broker"
	"github.com/ferryrt/ferry/session"
)

// Run runs, as subtests of t, the checks every broker passes, each on a broker of its own
// that open returns started and empty (and closes when its test ends).
func Run(t *testing.T, open func(t *testing.T) broker.Broker) {
	t.Run("PublishAndSince", func(t *testing.T) { PublishAndSince(t, open(t)) })
	t.Run("Ledger", func(t *testing.T) { CheckLedger(t, []session.Store{open(t)}, "c:conformance") })
}

// PublishAndSince checks positions and history on b, whose channels room:empty and room:a
// are empty: a channel never published has a position, stable across reads; publishes
// get consecutive offsets in one epoch; Since pages history after a position and answers
// a position it does not cover (another epoch, an offset ahead) with a reset to the top.
// It leaves three messages on room:a.
func PublishAndSince(t *testing.T, b broker.Broker) {
	t.Helper()
	ctx := context.Background()
	// A channel never published has a position, stable across reads.
	_, top, ok := MustSince(t, b, "room:empty", session.Position{}, 10)
	if !ok || top.Epoch == "" || top.Offset != 0 {
		t.Fatalf("empty channel: top %v ok %v", top, ok)
	}
	if _, again, _ := MustSince(t, b, "room:empty", session.Position{}, 10); again != top {
		t.Fatalf("epoch changed between reads: %v then %v", top, again)
	}

	m1 := MustPublish(t, b, "room:a", `{"n":1}`)
	m2, err := b.Publish(ctx, "room:a", nil, []byte("\x00\xffbin"))
	if err != nil {
		t.Fatal(err)
	}
	m3 := MustPublish(t, b, "room:a", `[3]`)
	if m1.Pos.Offset != 1 || m2.Pos.Offset != 2 || m3.Pos.Offset != 3 || m1.Pos.Epoch != m3.Pos.Epoch || m1.Time == 0 {
		t.Fatalf("positions %v %v %v, time %d", m1.Pos, m2.Pos, m3.Pos, m1.Time)
	}
	ep := m1.Pos.Epoch

	msgs, top, ok := MustSince(t, b, "room:a", session.Position{}, 10)
	if !ok || len(msgs) != 0 || top != m3.Pos {
		t.Fatalf("zero position: %d msgs, top %v, ok %v", len(msgs), top, ok)
	}
	msgs, top, ok = MustSince(t, b, "room:a", session.Position{Epoch: ep}, 10)
	if !ok || top != m3.Pos || len(msgs) != 3 {
		t.Fatalf("from 0: %v %v %v", Offsets(msgs), top, ok)
	}
	if string(msgs[0].Data) != `{"n":1}` || msgs[1].Data != nil || string(msgs[1].Bin) != "\x00\xffbin" || string(msgs[2].Data) != `[3]` {
		t.Fatalf("payloads: %q %q/%q %q", msgs[0].Data, msgs[1].Data, msgs[1].Bin, msgs[2].Data)
	}
	if msgs[0].Time != m1.Time {
		t.Fatalf("time from history %d, published %d", msgs[0].Time, m1.Time)
	}
	if msgs, _, ok = MustSince(t, b, "room:a", session.Position{Epoch: ep, Offset: 1}, 1); !ok || len(msgs) != 1 || msgs[0].Pos.Offset != 2 {
		t.Fatalf("page after 1: %v %v", Offsets(msgs), ok)
	}
	if msgs, _, ok = MustSince(t, b, "room:a", m3.Pos, 10); !ok || len(msgs) != 0 {
		t.Fatalf("caught up: %v %v", Offsets(msgs), ok)
	}
	for _, pos := range []session.Position{{Epoch: "other", Offset: 1}, {Epoch: ep, Offset: 4}, {Epoch: ep, Offset: 1<<64 - 1}} {
		if msgs, top, ok = MustSince(t, b, "room:a", pos, 10); ok || len(msgs) != 0 || top != m3.Pos {
			t.Fatalf("Since(%v) = %v %v %v, want a reset to %v", pos, Offsets(msgs), top, ok, m3.Pos)
		}
	}
}
