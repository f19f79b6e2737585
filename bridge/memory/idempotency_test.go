package memory_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/ferryrt/ferry/bridge/broker"
	"github.com/ferryrt/ferry/bridge/memory"
	"github.com/ferryrt/ferry/session"
)

// The memory broker's keys are bounded: beyond MaxIdempotencyKeys the oldest goes first,
// counted, and a retry with it publishes again.
func TestMemoryIdempotencyKeysBounded(t *testing.T) {
	b := memory.New(memory.Config{MaxIdempotencyKeys: 2})
	defer b.Close()
	pub := func(key string) uint64 {
		t.Helper()
		m, err := b.Publish(broker.WithIdempotencyKey(context.Background(), key), "room:m", json.RawMessage(`1`), nil)
		if err != nil {
			t.Fatal(err)
		}
		return m.Pos.Offset
	}
	pub("a")
	pub("b")
	if pub("b") != 2 || b.IdempotencyEvictions() != 0 {
		t.Fatal("a retry within the bound published again")
	}
	pub("c") // forgets a
	if got := pub("a"); got != 4 || b.IdempotencyEvictions() < 1 {
		t.Fatalf("the forgotten key: offset %d, evictions %d; want a new publish at 4, counted", got, b.IdempotencyEvictions())
	}
}

// Idempotency keys are saved with the rest of the state: a backend's retry across a
// graceful restart lands once and gets the first answer, a key reused for another payload
// is still a conflict, and a key past its window is not brought back.
func TestMemoryIdempotencyKeysSurviveRestart(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	a := memory.New(memory.Config{Now: clock, IdempotencyTTL: time.Minute})
	defer a.Close()
	ctx := context.Background()
	keyed := func(key string) context.Context { return broker.WithIdempotencyKey(ctx, key) }
	first, err := a.Publish(keyed("old"), "room:k", json.RawMessage(`0`), nil)
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(40 * time.Second)
	if first, err = a.Publish(keyed("k1"), "room:k", json.RawMessage(`1`), nil); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := a.Save(&buf); err != nil {
		t.Fatal(err)
	}

	now = now.Add(30 * time.Second) // "old" is past its minute, "k1" is not
	b := memory.New(memory.Config{Now: clock, IdempotencyTTL: time.Minute})
	defer b.Close()
	if err := b.Load(&buf); err != nil {
		t.Fatal(err)
	}
	again, err := b.Publish(keyed("k1"), "room:k", json.RawMessage(`1`), nil)
	if err != nil || again.Pos != first.Pos || again.Time != first.Time || string(again.Data) != `1` {
		t.Fatalf("the retry after the restart: %+v %v; want the first answer %+v", again, err, first)
	}
	if _, err := b.Publish(keyed("k1"), "room:k", json.RawMessage(`2`), nil); !errors.Is(err, broker.ErrIdempotencyConflict) {
		t.Fatalf("the key with another payload after the restart: %v", err)
	}
	if _, top, _, _ := b.Since(ctx, "room:k", session.Position{}, 1); top != first.Pos {
		t.Fatalf("after the retries the channel is at %v, want %v: one of them published", top, first.Pos)
	}
	if m, err := b.Publish(keyed("old"), "room:k", json.RawMessage(`0`), nil); err != nil || m.Pos.Offset != 3 {
		t.Fatalf("the expired key after the restart: %+v %v; want a new publish at 3", m, err)
	}
}
