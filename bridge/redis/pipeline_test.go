package redis_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/ferryrt/ferry/bridge/broker/brokertest"
	"github.com/ferryrt/ferry/bridge/presence"
	"github.com/ferryrt/ferry/bridge/redis"
	"github.com/ferryrt/ferry/internal/redistest"
	"github.com/ferryrt/ferry/session"
)

// pipelines records the most calls one pipeline of a client carried. (go-redis sets up
// each new connection with a pipeline of its own, of CLIENT and HELLO, not counted.)
type pipelines struct{ largest atomic.Int64 }

func (*pipelines) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (*pipelines) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook { return next }

func (p *pipelines) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		var n int64
		for _, c := range cmds {
			if c.Name() != "client" && c.Name() != "hello" {
				n++
			}
		}
		for {
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
		t.Errorf("the largest pipeline carried %d calls: %d publishes at once never shared a round trip", n, channels*each)
	}
}

// Session touches in flight at once (the heartbeats of sessions that connected together)
// share pipelines, with each other and with publishes, and each caller still gets its own
// answer: alive for a live session, not alive for one that expired or never was.
func TestRedisConcurrentTouchesSharePipelines(t *testing.T) {
	mr := miniredis.RunT(t)
	b := redistest.NewBroker(t, mr, redis.Config{})
	ctx := context.Background()
	const sessions = 300
	for i := range sessions {
		if i%3 == 2 {
			continue // never created
		}
		if err := b.CreateSession(ctx, fmt.Sprintf("s%d", i), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i < sessions; i += 3 {
		mr.Del(redis.SessionKey(b, fmt.Sprintf("s%d", i))) // expired
	}
	seen := &pipelines{} // from here: creating a session is a pipeline of its own
	b.Client().AddHook(seen)
	touchAll := func(publishes bool) {
		var wg sync.WaitGroup
		for i := range sessions {
			wg.Go(func() {
				alive, err := b.TouchSession(ctx, fmt.Sprintf("s%d", i), time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				if want := i%3 == 0; alive != want {
					t.Errorf("touch of s%d: alive %v, want %v", i, alive, want)
				}
			})
			if publishes && i%50 == 0 {
				wg.Go(func() {
					if _, err := b.Publish(ctx, "room:touch", json.RawMessage(`1`), nil); err != nil {
						t.Error(err)
					}
				})
			}
		}
		wg.Wait()
	}
	touchAll(false)
	if n := seen.largest.Load(); n < 2 {
		t.Errorf("the largest pipeline carried %d calls: %d touches at once never shared a round trip", n, sessions)
	}
	mr.SetTTL(redis.SessionKey(b, "s0"), time.Second)
	touchAll(true)
	// The touch set the expiry of a live session afresh: a minute, not what was left.
	if ttl := mr.TTL(redis.SessionKey(b, "s0")); ttl != time.Minute {
		t.Errorf("s0's expiry after the touch: %v, want a minute", ttl)
	}
}

// The presence refreshes of many sessions' heartbeats at once share pipelines too, and
// each member stays present and indexed with its new expiry.
func TestRedisConcurrentPresenceRefreshesSharePipelines(t *testing.T) {
	mr := miniredis.RunT(t)
	b := redistest.NewBroker(t, mr, redis.Config{})
	p := redis.NewPresence(b, presence.Config{TTL: time.Minute})
	defer p.Close()
	ctx := context.Background()
	const members = 200
	member := func(i int) presence.Member { return presence.Member{Session: fmt.Sprintf("s%03d", i)} }
	for i := range members {
		if err := p.Join(ctx, member(i), "room:here"); err != nil {
			t.Fatal(err)
		}
	}
	seen := &pipelines{}
	b.Client().AddHook(seen)
	var wg sync.WaitGroup
	for i := range members {
		wg.Go(func() {
			if err := p.Join(ctx, member(i), "room:here"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := seen.largest.Load(); n < 2 {
		t.Errorf("the largest pipeline carried %d calls: %d refreshes at once never shared a round trip", n, members)
	}
	if got, err := p.List(ctx, "room:here"); err != nil || len(got) != members {
		t.Fatalf("members after the refreshes: %d (%v), want %d", len(got), err, members)
	}
	due, err := b.Client().ZRangeWithScores(ctx, redis.PresenceDueKey(b), 0, -1).Result()
	if err != nil || len(due) != members {
		t.Fatalf("due index: %d entries (%v), want %d", len(due), err, members)
	}
	for _, z := range due {
		if left := time.Until(time.UnixMilli(int64(z.Score))); left < 50*time.Second {
			t.Fatalf("due entry %v expires in %v: not the refreshed expiry", z.Member, left)
		}
	}
}
