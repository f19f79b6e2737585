package bridge

import (
	"context"
	"log/slog"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferryrt/ferry/bridge/broker/brokertest"
	"github.com/ferryrt/ferry/bridge/memory"
	"github.com/ferryrt/ferry/session"
)

// countingDeliverer is the cheapest possible subscriber: what remains is the hub's own
// cost per subscriber (the map walk and the interface call).
type countingDeliverer struct{ n atomic.Int64 }

func (d *countingDeliverer) Deliver(*session.Message) { d.n.Add(1) }

func newBenchHub(b *testing.B) (*memory.Broker, *Hub) {
	b.Helper()
	broker := memory.New(memory.Config{})
	hub := NewHub(broker, slog.New(slog.DiscardHandler))
	if err := hub.Start(func(string, string) {}); err != nil {
		b.Fatal(err)
	}
	return broker, hub
}

var benchSubscribers = []int{100, 1000, 10000}

// BenchmarkHubFanout publishes through the in-memory broker to N subscribers of one
// channel: the figure to read is ns/delivery.
func BenchmarkHubFanout(b *testing.B) {
	ctx := context.Background()
	for _, n := range benchSubscribers {
		b.Run("fake/subscribers="+strconv.Itoa(n), func(b *testing.B) {
			broker, hub := newBenchHub(b)
			subs := make([]*countingDeliverer, n)
			for i := range subs {
				subs[i] = &countingDeliverer{}
				unsub, err := hub.Subscribe(ctx, "bench", subs[i])
				if err != nil {
					b.Fatal(err)
				}
				defer unsub()
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := broker.Publish(ctx, "bench", brokertest.BenchPayload, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
		})
		// Real attachments: Deliver takes each Stream's lock and queues the frame. The
		// writers' calls that drain the queues (every 256 messages, below the
		// slow-consumer bound) are not timed: they run on the connections' goroutines or
		// the writers' pool. "next": writers that wait in Next (plain I/O); "pooled":
		// writers started by OnWake that drain with TryNext (the pooled I/O).
		for _, mode := range []string{"next", "pooled"} {
			b.Run(mode+"/subscribers="+strconv.Itoa(n), func(b *testing.B) {
				benchStreamFanout(b, n, mode == "pooled")
			})
		}
	}
}

func benchStreamFanout(b *testing.B, n int, pooled bool) {
	ctx := context.Background()
	broker, hub := newBenchHub(b)
	cfg := session.StreamConfig{
		QueueMessages: session.DefaultQueueMessages,
		QueueBytes:    session.DefaultQueueBytes,
		BatchMessages: session.DefaultBatchMessages,
		BatchBytes:    session.DefaultBatchBytes,
		PageSize:      session.DefaultQueueMessages / 2,
	}
	next := func(c *session.Stream) ([]session.Outgoing, error) {
		if pooled {
			return c.TryNext(ctx)
		}
		return c.Next(ctx, time.Time{})
	}
	conns := make([]*session.Stream, n)
	for i := range conns {
		c := session.NewStream(hub, cfg)
		if pooled {
			c.OnWake = func() {}
		}
		c.Subscribe("bench", session.Position{}, true)
		if out, err := next(c); err != nil || len(out) != 1 {
			b.Fatalf("subscribing: %d frames, %v", len(out), err)
		}
		conns[i] = c
		defer c.Done()
	}
	drain := func(want int) {
		for _, c := range conns {
			if out, err := next(c); err != nil || len(out) != want {
				b.Fatalf("drain: %d frames, want %d, %v", len(out), want, err)
			}
			if pooled {
				// The writer's last TryNext finds nothing: idle again, woken by OnWake.
				if out, err := c.TryNext(ctx); err != nil || len(out) != 0 {
					b.Fatalf("drain: %d frames more, %v", len(out), err)
				}
			}
		}
	}
	b.ReportAllocs()
	queued := 0
	for b.Loop() {
		if _, err := broker.Publish(ctx, "bench", brokertest.BenchPayload, nil); err != nil {
			b.Fatal(err)
		}
		if queued++; queued == 256 {
			b.StopTimer()
			drain(queued)
			queued = 0
			b.StartTimer()
		}
	}
	if queued > 0 {
		drain(queued)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
}
