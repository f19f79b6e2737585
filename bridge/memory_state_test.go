package bridge

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ferryrt/ferry/session"
)

// A saved and reloaded broker continues every channel in the same epoch, keeps history,
// sessions and their dedupe windows: a client resumes across the restart instead of being
// reset, and a resent upstream frame is still a duplicate.
func TestMemoryStateSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	a := NewMemoryBroker(MemoryConfig{})
	var mid session.Position
	for i := range 10 {
		m, err := a.Publish(ctx, "room:x", []byte(`{"i":1}`), nil)
		if err != nil {
			t.Fatal(err)
		}
		if i == 4 {
			mid = m.Pos
		}
	}
	a.Publish(ctx, "bin", nil, []byte{0, 1, 2})
	a.CreateSession(ctx, "sid-1", time.Minute)
	a.MarkUpstream(ctx, "c:client-1", 7, "pabc.3", time.Minute)
	var buf bytes.Buffer
	if err := a.Save(&buf); err != nil {
		t.Fatal(err)
	}

	b := NewMemoryBroker(MemoryConfig{})
	if err := b.Load(&buf); err != nil {
		t.Fatal(err)
	}
	msgs, top, ok, err := b.Since(ctx, "room:x", mid, 100)
	if err != nil || !ok || len(msgs) != 5 || top != (session.Position{Epoch: mid.Epoch, Offset: 10}) {
		t.Fatalf("since %v: %d msgs, top %v, ok %v, err %v", mid, len(msgs), top, ok, err)
	}
	if string(msgs[0].Frame()) != `{"t":"msg","ch":"room:x","ep":"`+mid.Epoch+`","off":6,"d":{"i":1}}` {
		t.Fatalf("frame after reload: %s", msgs[0].Frame())
	}
	if m, _ := b.Publish(ctx, "room:x", []byte(`2`), nil); m.Pos.Offset != 11 || m.Pos.Epoch != mid.Epoch {
		t.Fatalf("publish after reload at %v", m.Pos)
	}
	if msgs, _, _, _ := b.Since(ctx, "bin", session.Position{Epoch: top.Epoch}, 1); len(msgs) != 0 {
		t.Fatalf("other epoch leaked messages")
	}
	if alive, _ := b.TouchSession(ctx, "sid-1", time.Minute); !alive {
		t.Fatal("session lost")
	}
	if first, res, _ := b.MarkUpstream(ctx, "c:client-1", 7, "", time.Minute); first || res != "pabc.3" {
		t.Fatalf("dedupe window lost: seq 7 is first %v with result %q", first, res)
	}
	if first, _, _ := b.MarkUpstream(ctx, "c:client-1", 8, "", time.Minute); !first {
		t.Fatal("seq 8 seen as duplicate")
	}
}

func TestMemoryStateRejectsBadFiles(t *testing.T) {
	for _, in := range []string{
		``,
		`{"version":2}`,
		`{"version":1,"channels":{"bad name":{"epoch":"a","top":0}}}`,
		`{"version":1,"channels":{"c":{"epoch":"a","top":5,"messages":[{"off":1,"ts":0,"d":1}]}}}`,
	} {
		if err := NewMemoryBroker(MemoryConfig{}).Load(strings.NewReader(in)); err == nil {
			t.Errorf("Load(%q) succeeded", in)
		}
	}
}
