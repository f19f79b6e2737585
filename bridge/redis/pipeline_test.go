package redis_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/alicebob/miniredis/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/ferryrt/ferry/bridge/broker/brokertest"
	"github.com/ferryrt/ferry/bridge/redis"
	"github.com/ferryrt/ferry/internal/redistest"
	"github.com/ferryrt/ferry/session"
)

// pipelines records the largest pipeline a client sent.
type pipelines struct{ largest atomic.Int64 }

func (*pipelines) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (*pipelines) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook { return next }

func (p *pipelines) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		for n := int64(len(cmds)); ; {
			l := p.largest.Load()
			if n <= l || p.largest.CompareAndSwap(l, n) {
				break
			}
		}
		return next(ctx, cmds)
	}
}

// Publishes in flight at once share round trips to Redis (one pipeline), and each still
// lands once: every caller is answered its own position, a channel's positions are 1 to n
// with none twice, and its history holds every payload once.
func TestRedisConcurrentPublishesSharePipelines(t *testing.T) {
	mr := miniredis.RunT(t)
	b := redistest.NewBroker(t, mr, redis.Config{})
	seen := &pipelines{}
	b.Client().AddHook(seen)
	const channels, each = 20, 25
	ctx := context.Background()
	var mu sync.Mutex
	answered := make([][]uint64, channels)
	epochs := make([]string, channels)
	var wg sync.WaitGroup
	for c := range channels {
		for i := range each {
			wg.Go(func() {
				m, err := b.Publish(ctx, fmt.Sprintf("room:p%d", c), json.RawMessage(fmt.Sprint(i)), nil)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				answered[c] = append(answered[c], m.Pos.Offset)
				epochs[c] = m.Pos.Epoch
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	for c := range channels {
		ch := fmt.Sprintf("room:p%d", c)
		slices.Sort(answered[c])
		for i, off := range answered[c] {
			if off != uint64(i+1) {
				t.Fatalf("%s: positions answered %v, want 1 to %d once each", ch, answered[c], each)
			}
		}
		msgs, _, _ := brokertest.MustSince(t, b, ch, session.Position{Epoch: epochs[c]}, 100)
		var data []string
		for _, m := range msgs {
			data = append(data, string(m.Data))
		}
		slices.Sort(data)
		if len(data) != each || len(slices.Compact(data)) != each {
			t.Fatalf("%s: history holds %v, want each of the %d payloads once", ch, data, each)
		}
	}
	if n := seen.largest.Load(); n < 2 {
		t.Errorf("the largest pipeline carried %d commands: %d publishes at once never shared a round trip", n, channels*each)
	}
}
