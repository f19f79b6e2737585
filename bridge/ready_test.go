package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ferryrt/ferry/bridge/memory"
	"github.com/ferryrt/ferry/session"
)

// flakyBroker is a memory.Broker that can be taken down.
type flakyBroker struct {
	*memory.Broker
	down atomic.Bool
}

var errDown = errors.New("broker unreachable")

func (b *flakyBroker) Ready(ctx context.Context) error {
	if b.down.Load() {
		return errDown
	}
	return b.Broker.Ready(ctx)
}

func (b *flakyBroker) Publish(ctx context.Context, ch string, d json.RawMessage, bin []byte) (*session.Message, error) {
	if b.down.Load() {
		return nil, errDown
	}
	return b.Broker.Publish(ctx, ch, d, bin)
}

// Readiness follows the broker and the drain; a publish while the broker is down fails
// loudly, never "200 and lost".
func TestReadyFollowsBrokerAndDrain(t *testing.T) {
	b := &flakyBroker{Broker: memory.New(memory.Config{})}
	ts := newTestServer(t, Config{Broker: b, APIKey: "k"})
	ctx := context.Background()
	publish := func() int {
		req, _ := http.NewRequest(http.MethodPost, ts.URL+"/api/publish", strings.NewReader(`{"channel":"c","data":1}`))
		req.Header.Set("Authorization", "Bearer k")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if err := ts.Ready(ctx); err != nil || publish() != 200 {
		t.Fatalf("healthy: ready %v", err)
	}
	b.down.Store(true)
	if err := ts.Ready(ctx); !errors.Is(err, errDown) {
		t.Fatalf("broker down: ready %v", err)
	}
	if code := publish(); code != 503 {
		t.Fatalf("publish while down: %d", code)
	}
	if _, err := ts.Publish(ctx, "c", 1); !errors.Is(err, errDown) {
		t.Fatalf("Go publish while down: %v", err)
	}
	b.down.Store(false)
	if err := ts.Ready(ctx); err != nil || publish() != 200 {
		t.Fatalf("recovered: ready %v", err)
	}
	ts.Shutdown(ctx)
	if err := ts.Ready(ctx); err == nil || !strings.Contains(err.Error(), "draining") {
		t.Fatalf("draining: ready %v", err)
	}
}
