package memory_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferryrt/ferry/bridge/broker/brokertest"
	"github.com/ferryrt/ferry/bridge/memory"
	"github.com/ferryrt/ferry/session"
)

// A saved and reloaded broker continues every channel in the same epoch, keeps history,
// sessions and their dedupe windows: a client resumes across the restart instead of being
// reset, and a resent upstream frame is still a duplicate.
func TestMemoryStateSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	a := memory.New(memory.Config{})
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

	b := memory.New(memory.Config{})
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
		if err := memory.New(memory.Config{}).Load(strings.NewReader(in)); err == nil {
			t.Errorf("Load(%q) succeeded", in)
		}
	}
}

// The in-memory dedupe windows behave like session.Ledger, last DedupeTTL after their
// latest frame, and are bounded by MaxDedupeKeys, forgetting the least recently used.
func TestMemoryDedupeWindows(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	b := memory.New(memory.Config{Now: clock, MaxDedupeKeys: 3})
	defer b.Close()
	brokertest.CheckLedger(t, []session.Store{b}, "c:walk")

	mark := func(key string, seq uint64) bool {
		first, _, _ := b.MarkUpstream(ctx, key, seq, "", time.Minute)
		return first
	}
	mark("c:a", 1)
	mark("c:b", 1)
	mark("c:a", 2) // a is now more recent than b and walk
	mark("c:c", 1) // one too many: walk, the least recently marked, goes
	if kept, evicted := b.DedupeWindows(); kept != 3 || evicted != 1 {
		t.Fatalf("%d windows kept, %d evicted; want 3 and 1", kept, evicted)
	}
	if mark("c:a", 1) || mark("c:b", 1) || mark("c:c", 1) {
		t.Fatal("a window within the bound was forgotten")
	}
	mu.Lock()
	now = now.Add(61 * time.Second)
	mu.Unlock()
	if kept, _ := b.DedupeWindows(); kept != 0 {
		t.Fatalf("%d windows kept past their TTL", kept)
	}
	if !mark("c:a", 1) {
		t.Fatal("an expired window still deduplicates")
	}
}

// A state saved before dedupe windows had keys of their own (a window per session) is
// loaded as the windows of those sessions' keys.
func TestMemoryStateLoadsSessionWindows(t *testing.T) {
	ctx := context.Background()
	w := session.NewWindow(session.DefaultDedupeWindow)
	w.Mark(7)
	maxSeq, bits := w.State()
	old, _ := json.Marshal(map[string]any{"version": 1, "channels": map[string]any{},
		"sessions": map[string]any{"sid-1": map[string]any{"expires": time.Now().Add(time.Minute).UnixMilli(), "max": maxSeq, "bits": bits}}})
	b := memory.New(memory.Config{})
	defer b.Close()
	if err := b.Load(bytes.NewReader(old)); err != nil {
		t.Fatal(err)
	}
	key := session.DedupeKey(session.Claims{SID: "sid-1"})
	if first, _, _ := b.MarkUpstream(ctx, key, 7, "", time.Minute); first {
		t.Fatal("seq 7 of the old state's window processed again")
	}
	if first, _, _ := b.MarkUpstream(ctx, key, 8, "", time.Minute); !first {
		t.Fatal("seq 8 seen as a duplicate")
	}
}
