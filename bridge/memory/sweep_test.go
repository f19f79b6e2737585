package memory_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ferryrt/ferry/bridge/broker"
	"github.com/ferryrt/ferry/bridge/broker/brokertest"
	"github.com/ferryrt/ferry/bridge/memory"
	"github.com/ferryrt/ferry/internal/await"
	"github.com/ferryrt/ferry/session"
)

// publishN publishes the number v to ch and returns its position.
func publishN(t *testing.T, b broker.Broker, ch string, v int) session.Position {
	t.Helper()
	return brokertest.MustPublish(t, b, ch, fmt.Sprint(v)).Pos
}

// History leaves messages older than its age bound, on a read as well as on a publish: a
// resume behind them is refused (the caller sends a reset) while a resume after them still
// gets exactly what followed.
func TestMemoryHistoryTrimmedByAge(t *testing.T) {
	ctx := context.Background()
	b, clock := brokertest.NewSweptMemory(t, memory.Config{History: broker.HistoryConfig{TTL: time.Minute}})
	first := publishN(t, b, "room:a", 1)
	publishN(t, b, "room:a", 2)
	clock.Add(40 * time.Second)
	third := publishN(t, b, "room:a", 3)
	publishN(t, b, "room:a", 4)

	if msgs, _, ok, _ := b.Since(ctx, "room:a", first, 10); !ok || len(msgs) != 3 {
		t.Fatalf("within the TTL: %d messages, ok %v; want 3, true", len(msgs), ok)
	}
	clock.Add(30 * time.Second) // messages 1 and 2 are 70 s old, 3 and 4 are 30 s old
	msgs, top, ok, err := b.Since(ctx, "room:a", first, 10)
	if err != nil || ok || len(msgs) != 0 {
		t.Fatalf("resume behind aged-out history: %d messages, ok %v, err %v; want a refusal", len(msgs), ok, err)
	}
	if top != (session.Position{Epoch: first.Epoch, Offset: 4}) {
		t.Fatalf("top %v after trimming, want %s.4: trimming must not move positions", top, first.Epoch)
	}
	// Offset 2 aged out but nothing after it did: the resume is complete.
	msgs, _, ok, _ = b.Since(ctx, "room:a", session.Position{Epoch: first.Epoch, Offset: 2}, 10)
	if !ok || len(msgs) != 2 || msgs[0].Pos != third || string(msgs[1].Data) != "4" {
		t.Fatalf("resume after the aged-out part: ok %v, %v", ok, msgs)
	}
	clock.Add(31 * time.Second)
	if msgs, _, ok, _ := b.Since(ctx, "room:a", session.Position{Epoch: first.Epoch, Offset: 2}, 10); ok || len(msgs) != 0 {
		t.Fatalf("all history aged out: %d messages, ok %v", len(msgs), ok)
	}
	if _, _, ok, _ := b.Since(ctx, "room:a", top, 10); !ok {
		t.Fatal("a client at the top lost its place although it missed nothing")
	}
}

// Reads of channels that don't exist create no state; the sweeper trims every channel by
// age and drops those left with neither history nor subscribers, so the channel count
// comes back down: per-session channels outlive neither their history nor their session.
func TestMemorySweepDropsUnusedChannels(t *testing.T) {
	ctx := context.Background()
	b, clock := brokertest.NewSweptMemory(t, memory.Config{})
	b.CreateSession(ctx, "s-gone", time.Minute)
	for i := range 100 {
		publishN(t, b, fmt.Sprint("$session:s", i), i)
	}
	b.Subscribe(ctx, "room:watched")
	for i := range 1000 {
		if _, top, _, err := b.Since(ctx, fmt.Sprint("random:", i), session.Position{}, 100); err != nil || top.Epoch == "" {
			t.Fatalf("read of an absent channel: %v %v", top, err)
		}
		b.Since(ctx, fmt.Sprint("random:", i), session.Position{Epoch: "zzzzzzzz", Offset: 7}, 100)
	}
	if n := b.Channels(); n != 101 {
		t.Fatalf("%d channels after reading 1000 absent ones, want 101", n)
	}
	if n := b.Sweep(); n != 0 || b.Channels() != 101 {
		t.Fatalf("a sweep within the TTL dropped %d channels, %d left", n, b.Channels())
	}

	clock.Add(broker.DefaultHistoryTTL + time.Second)
	if n := b.Sweep(); n != 100 || b.Channels() != 1 {
		t.Fatalf("sweep after the TTL dropped %d channels, %d left; want 100 dropped, the subscribed one kept", n, b.Channels())
	}
	if b.Sessions() != 0 {
		t.Fatal("sweep kept an expired session")
	}
	b.Unsubscribe(ctx, "room:watched")
	if n := b.Sweep(); n != 1 || b.Channels() != 0 {
		t.Fatalf("sweep after the last unsubscribe dropped %d, %d left", n, b.Channels())
	}
}

// A dropped channel used again continues its position from its tombstone, so a client at
// the top resumes and one behind is told to reset. Once the tombstone is forgotten the
// channel starts a new epoch: no old position ever names a new message.
func TestMemoryDroppedChannelKeepsPositionsHonest(t *testing.T) {
	ctx := context.Background()
	b, clock := brokertest.NewSweptMemory(t, memory.Config{Tombstones: 1})
	var aTop session.Position
	for i := 1; i <= 3; i++ {
		aTop = publishN(t, b, "room:a", i)
	}
	clock.Add(broker.DefaultHistoryTTL / 2)
	bTop := publishN(t, b, "room:b", 1)
	// Two sweeps, so that room:a is dropped first and room:b's tombstone evicts its own
	// (Tombstones: 1).
	for _, name := range []string{"room:a", "room:b"} {
		clock.Add(broker.DefaultHistoryTTL/2 + time.Second)
		if n := b.Sweep(); n != 1 {
			t.Fatalf("sweep for %s dropped %d channels, want 1", name, n)
		}
	}
	if b.Channels() != 0 {
		t.Fatalf("%d channels left", b.Channels())
	}

	if _, top, _, _ := b.Since(ctx, "room:b", session.Position{}, 1); top != bTop {
		t.Fatalf("dropped room:b reads at %v, want its tombstone %v", top, bTop)
	}
	if _, _, ok, _ := b.Since(ctx, "room:b", session.Position{Epoch: bTop.Epoch}, 10); ok {
		t.Fatal("a resume behind dropped history was accepted")
	}
	if b.Channels() != 0 {
		t.Fatal("reading a dropped channel recreated it")
	}
	if next := publishN(t, b, "room:b", 2); next != (session.Position{Epoch: bTop.Epoch, Offset: 2}) {
		t.Fatalf("room:b continued at %v, want right after %v", next, bTop)
	}
	if msgs, _, ok, _ := b.Since(ctx, "room:b", bTop, 10); !ok || len(msgs) != 1 || string(msgs[0].Data) != "2" {
		t.Fatalf("resume from the tombstone's top: ok %v, %v", ok, msgs)
	}

	// room:a comes back with as many messages as before: offsets 1 to 3 again, which
	// must not be confused with the old ones.
	for i := 1; i <= 3; i++ {
		publishN(t, b, "room:a", 10+i)
	}
	_, top, _, _ := b.Since(ctx, "room:a", session.Position{}, 1)
	if top.Epoch == aTop.Epoch || top.Offset != 3 {
		t.Fatalf("room:a recreated at %v after its tombstone was forgotten, old top %v: want a new epoch", top, aTop)
	}
	for _, old := range []session.Position{aTop, {Epoch: aTop.Epoch, Offset: 1}} {
		if msgs, _, ok, _ := b.Since(ctx, "room:a", old, 10); ok || len(msgs) != 0 {
			t.Fatalf("old position %v got %d new messages, ok %v: want a reset", old, len(msgs), ok)
		}
	}
}

// The periodic sweeper runs by itself, and Close stops it.
func TestMemorySweeperRunsUntilClose(t *testing.T) {
	clock := brokertest.NewClock(time.Now())
	b := memory.New(memory.Config{Now: clock.Now, SweepInterval: 5 * time.Millisecond})
	defer b.Close()
	publishN(t, b, "room:x", 1)
	clock.Add(broker.DefaultHistoryTTL + time.Second)
	await.Until(t, "the sweeper to drop the channel", func() bool { return b.Channels() == 0 })
	b.Close()
	rescheduled := memory.StopSweeper(b)
	if rescheduled {
		t.Fatal("the sweeper is still scheduled after Close")
	}
}

// Save keeps the positions of dropped channels, so their clients resume across a restart
// too; channels the state does not know begin new epochs.
func TestMemoryStateKeepsTombstones(t *testing.T) {
	ctx := context.Background()
	a, clock := brokertest.NewSweptMemory(t, memory.Config{})
	top := publishN(t, a, "room:t", 1)
	clock.Add(broker.DefaultHistoryTTL + time.Second)
	if n := a.Sweep(); n != 1 {
		t.Fatalf("dropped %d channels", n)
	}
	var buf bytes.Buffer
	if err := a.Save(&buf); err != nil {
		t.Fatal(err)
	}
	b, _ := brokertest.NewSweptMemory(t, memory.Config{})
	if err := b.Load(&buf); err != nil {
		t.Fatal(err)
	}
	if _, _, ok, _ := b.Since(ctx, "room:t", top, 10); !ok {
		t.Fatal("the position of a dropped channel did not survive Save and Load")
	}
	if next := publishN(t, b, "room:t", 2); next != (session.Position{Epoch: top.Epoch, Offset: 2}) {
		t.Fatalf("after Load room:t continued at %v, want after %v", next, top)
	}
}

// The checks every broker passes.
func TestMemoryConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) broker.Broker {
		b := memory.New(memory.Config{})
		t.Cleanup(func() { b.Close() })
		brokertest.Start(t, b)
		return b
	})
}
