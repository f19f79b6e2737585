package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/ferryrt/ferry/bridge/broker"
	"github.com/ferryrt/ferry/bridge/memory"
	"github.com/ferryrt/ferry/bridge/redis"
	"github.com/ferryrt/ferry/internal/redistest"
	"github.com/ferryrt/ferry/session"
)

// The same Idempotency-Key twice on POST /api/publish: the second is answered with the
// first's position and publishes nothing; another payload under the key is refused with
// 422; the key is per channel. On both brokers.
func TestPublishIdempotencyKey(t *testing.T) {
	brokers := map[string]func(t *testing.T) Broker{
		"memory":    func(t *testing.T) Broker { return memory.New(memory.Config{}) },
		"miniredis": func(t *testing.T) Broker { return redistest.NewBroker(t, miniredis.RunT(t), redis.Config{}) },
	}
	for name, newBroker := range brokers {
		t.Run(name, func(t *testing.T) {
			b := newBroker(t)
			ts := newTestServer(t, Config{Broker: b, APIKey: "k"})
			post := func(key, channel, data string) (int, map[string]any) {
				t.Helper()
				body, _ := json.Marshal(PublishRequest{Channel: channel, Data: json.RawMessage(data)})
				if key == "" {
					return postPublish(t, ts.URL, "k", string(body))
				}
				return postPublish(t, ts.URL, "k", string(body), "Idempotency-Key", key)
			}
			st, first := post("order-17", "room:a", `{"n":1}`)
			if st != 200 || first["offset"] != 1.0 {
				t.Fatalf("first publish: %d %v", st, first)
			}
			st, again := post("order-17", "room:a", `{"n":1}`)
			if st != 200 || again["position"] != first["position"] {
				t.Fatalf("the same key again: %d %v, want 200 and the first position %v", st, again, first["position"])
			}
			st, _ = post("", "room:a", `{"n":2}`)
			if st != 200 {
				t.Fatalf("publish without a key: %d", st)
			}
			st, conflict := post("order-17", "room:a", `{"n":3}`)
			if st != http.StatusUnprocessableEntity || !strings.Contains(fmt.Sprint(conflict["reason"]), "Idempotency-Key") {
				t.Fatalf("the key with another payload: %d %v, want 422 naming Idempotency-Key", st, conflict)
			}
			st, other := post("order-17", "room:b", `{"n":1}`)
			if st != 200 || other["offset"] != 1.0 {
				t.Fatalf("the key on another channel: %d %v, want a publish of its own", st, other)
			}
			for _, bad := range []string{strings.Repeat("x", broker.MaxIdempotencyKeyLen+1), "with space", "é"} {
				if st, out := post(bad, "room:a", `{"n":4}`); st != 400 || !strings.Contains(fmt.Sprint(out["reason"]), "idempotency key") {
					t.Errorf("key %.20q: %d %v, want 400 naming the idempotency key", bad, st, out)
				}
			}
			msgs, top, ok, err := b.Since(context.Background(), "room:a", session.Position{Epoch: fmt.Sprint(first["epoch"])}, 10)
			if err != nil || !ok {
				t.Fatal(err, ok)
			}
			var got []string
			for _, m := range msgs {
				got = append(got, string(m.Data))
			}
			if strings.Join(got, " ") != `{"n":1} {"n":2}` || top.Offset != 2 {
				t.Fatalf("room:a holds %v (top %v), want {\"n\":1} {\"n\":2}", got, top)
			}
		})
	}
}

// The Go API: Server.Publish under WithIdempotencyKey, on both brokers; the window ends
// after IdempotencyTTL.
func TestPublishWithIdempotencyKeyGoAPI(t *testing.T) {
	for _, name := range []string{"memory", "miniredis"} {
		t.Run(name, func(t *testing.T) {
			var b Broker
			var mr *miniredis.Miniredis
			now := time.Now()
			clock := func() time.Time { return now }
			if name == "memory" {
				b = memory.New(memory.Config{IdempotencyTTL: time.Minute, Now: clock})
			} else {
				mr = miniredis.RunT(t)
				b = redistest.NewBroker(t, mr, redis.Config{IdempotencyTTL: time.Minute})
			}
			ts := newTestServer(t, Config{Broker: b})
			ctx := WithIdempotencyKey(context.Background(), "job-1")
			p1, err := ts.Publish(ctx, "room:go", map[string]int{"n": 1})
			if err != nil {
				t.Fatal(err)
			}
			p2, err := ts.Publish(ctx, "room:go", map[string]int{"n": 1})
			if err != nil || p2 != p1 {
				t.Fatalf("same key again: %v %v, want %v", p2, err, p1)
			}
			if _, err := ts.Publish(ctx, "room:go", map[string]int{"n": 2}); !errors.Is(err, ErrIdempotencyConflict) {
				t.Fatalf("same key, other payload: %v, want ErrIdempotencyConflict", err)
			}
			var se *session.Error
			if _, err := ts.Publish(WithIdempotencyKey(context.Background(), ""), "room:go", 1); !errors.As(err, &se) || se.Code != session.CodeBadRequest {
				t.Fatalf("empty key: %v, want a bad request", err)
			}
			// Past the window the key is forgotten: the same publish lands again.
			if mr != nil {
				mr.FastForward(time.Minute + time.Second)
			} else {
				now = now.Add(time.Minute + time.Second)
			}
			p3, err := ts.Publish(ctx, "room:go", map[string]int{"n": 1})
			if err != nil || p3.Offset != p1.Offset+1 {
				t.Fatalf("after the window: %v %v, want offset %d", p3, err, p1.Offset+1)
			}
		})
	}
}
