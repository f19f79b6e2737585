package memory_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/ferryrt/ferry/bridge/broker"
	"github.com/ferryrt/ferry/bridge/memory"
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
