package session

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"testing"
	"time"
)

// benchSource is one channel with no history: a subscription from now gets its sub frame
// and then only live messages, which the benchmark delivers itself through the Deliverer
// the subscription registered, as the hub does.
type benchSource struct {
	mu  sync.Mutex
	top Position
	d   Deliverer
}

func (s *benchSource) Subscribe(_ context.Context, _ string, d Deliverer) (func(), error) {
	s.mu.Lock()
	s.d = d
	s.mu.Unlock()
	return func() {}, nil
}

func (s *benchSource) Since(context.Context, string, Position, int) ([]*Message, Position, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return nil, s.top, true, nil
}

var benchPayload = json.RawMessage(`{"p":1,"seq":42,"ts":1700000000000000000,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`)

func benchMessage(off uint64) *Message {
	return &Message{Channel: "bench", Pos: Position{Epoch: "e1", Offset: off}, Data: benchPayload, Time: 1}
}

// liveStream returns a Stream subscribed to "bench" and past its sub frame, so that Deliver
// takes the live path.
// liveStream returns a Stream subscribed to "bench" and the Deliverer of that subscription.
func liveStream(b *testing.B, cfg StreamConfig) (*Stream, Deliverer) {
	b.Helper()
	src := &benchSource{top: Position{Epoch: "e1", Offset: 0}}
	c := NewStream(src, cfg)
	c.Subscribe("bench", Position{}, true)
	out, err := c.Next(context.Background(), time.Time{})
	if err != nil || len(out) != 1 {
		b.Fatalf("Next after subscribe: %d frames, %v", len(out), err)
	}
	return c, src.d
}

func benchStreamConfig() StreamConfig {
	return StreamConfig{
		QueueMessages: DefaultQueueMessages,
		QueueBytes:    DefaultQueueBytes,
		BatchMessages: DefaultBatchMessages,
		BatchBytes:    DefaultBatchBytes,
		PageSize:      DefaultQueueMessages / 2,
	}
}

// BenchmarkMessageFrame is the cost of a message's frame per subscriber: it is encoded
// once and every further subscriber reads the cached bytes (acceptLocked asks for the
// frame and the SSE id of every delivery).
func BenchmarkMessageFrame(b *testing.B) {
	for _, subs := range []int{1, 100, 10000} {
		b.Run("subscribers="+strconv.Itoa(subs), func(b *testing.B) {
			b.ReportAllocs()
			n := 0
			for i := 0; b.Loop(); i++ {
				m := benchMessage(uint64(i + 1))
				for range subs {
					n += len(m.Frame()) + len(m.EventID())
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*subs), "ns/delivery")
			_ = n
		})
	}
}

// BenchmarkMessageFrameParallel reads one message's frame from every core, as the
// writers of many connections do after one fan-out.
func BenchmarkMessageFrameParallel(b *testing.B) {
	m := benchMessage(1)
	m.Frame()
	b.RunParallel(func(pb *testing.PB) {
		n := 0
		for pb.Next() {
			n += len(m.Frame())
		}
		_ = n
	})
}

// BenchmarkStreamDeliver is the fan-out's cost per subscriber inside one Stream: Deliver
// (lock, position check, queue push, wake) with the writer's Next taking the frames
// every 256 messages, as a WebSocket writer that keeps up does.
func BenchmarkStreamDeliver(b *testing.B) {
	c, d := liveStream(b, benchStreamConfig())
	ctx := context.Background()
	msgs := make([]*Message, 256)
	off := uint64(0)
	b.ReportAllocs()
	for b.Loop() {
		if off%256 == 0 {
			b.StopTimer()
			for i := range msgs {
				msgs[i] = benchMessage(off + uint64(i) + 1)
				msgs[i].Frame()
			}
			b.StartTimer()
		}
		off++
		d.Deliver(msgs[(off-1)%256])
		if off%256 == 0 {
			if out, err := c.Next(ctx, time.Time{}); err != nil || len(out) != 256 {
				b.Fatalf("Next: %d frames, %v", len(out), err)
			}
		}
	}
}

// BenchmarkStreamNextBatch is the long-poll batch assembly: k frames waiting in the queue
// come out of one Next call (one poll answer). The figure to read is ns/frame.
func BenchmarkStreamNextBatch(b *testing.B) {
	for _, k := range []int{1, 10, 100, 1000} {
		b.Run("frames="+strconv.Itoa(k), func(b *testing.B) {
			cfg := benchStreamConfig()
			cfg.QueueMessages = k + 8
			c, d := liveStream(b, cfg)
			ctx := context.Background()
			msgs := make([]*Message, k)
			off := uint64(0)
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				for i := range msgs {
					off++
					msgs[i] = benchMessage(off)
					msgs[i].Frame()
				}
				for _, m := range msgs {
					d.Deliver(m)
				}
				b.StartTimer()
				out, err := c.Next(ctx, time.Time{})
				if err != nil || len(out) != k {
					b.Fatalf("Next: %d frames, %v", len(out), err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*k), "ns/frame")
		})
	}
}

// BenchmarkPingFrame is the heartbeat's encoding, which every attachment pays every
// heartbeat: PingFrame, and encoding/json on the struct (Encode) as it was.
func BenchmarkPingFrame(b *testing.B) {
	b.Run("PingFrame", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			_ = PingFrame(uint64(i), 1700000000000)
		}
	})
	b.Run("Encode", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			f := ServerFrame{T: FramePing, Seq: uint64(i), TS: 1700000000000}
			_ = f.Encode()
		}
	})
}
