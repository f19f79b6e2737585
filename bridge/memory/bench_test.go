package memory_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/ferryrt/ferry/bridge/broker"
	"github.com/ferryrt/ferry/bridge/broker/brokertest"
	"github.com/ferryrt/ferry/bridge/memory"
	"github.com/ferryrt/ferry/session"
)

// BenchmarkMemoryBrokerPublish appends to a channel whose history is full (1000
// messages), so every publish also trims, with no subscriber.
func BenchmarkMemoryBrokerPublish(b *testing.B) {
	ctx := context.Background()
	mb := memory.New(memory.Config{})
	for range broker.DefaultHistorySize {
		mb.Publish(ctx, "bench", brokertest.BenchPayload, nil)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := mb.Publish(ctx, "bench", brokertest.BenchPayload, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMemoryBrokerSince reads history: "top" is the position check every attachment
// makes per channel (every long-poll), the others a resume of 1, 100 and 1000 messages.
func BenchmarkMemoryBrokerSince(b *testing.B) {
	ctx := context.Background()
	mb := memory.New(memory.Config{})
	var last *session.Message
	for range broker.DefaultHistorySize {
		last, _ = mb.Publish(ctx, "bench", brokertest.BenchPayload, nil)
	}
	top := last.Pos
	b.Run("top", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, ok, err := mb.Since(ctx, "bench", session.Position{}, 0); !ok || err != nil {
				b.Fatal(ok, err)
			}
		}
	})
	for _, k := range []int{1, 100, 999} {
		b.Run("resume="+strconv.Itoa(k), func(b *testing.B) {
			from := session.Position{Epoch: top.Epoch, Offset: top.Offset - uint64(k)}
			b.ReportAllocs()
			for b.Loop() {
				msgs, _, ok, err := mb.Since(ctx, "bench", from, 1000)
				if !ok || err != nil || len(msgs) != k {
					b.Fatal(len(msgs), ok, err)
				}
			}
		})
	}
}
