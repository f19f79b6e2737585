package bridge

import (
	"context"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/ferryrt/ferry/bridge/redis"
	"github.com/ferryrt/ferry/internal/await"
	"github.com/ferryrt/ferry/internal/redistest"
)

// The scenario of issue 18 (see exactlyOnce) with the dedupe scripts on a real Redis:
// the session expires by its key's TTL, in real time.
func TestRealRedisExactlyOnceAcrossSessions(t *testing.T) {
	redistest.ForEachReal(t, testRealRedisExactlyOnce)
}

func testRealRedisExactlyOnce(t *testing.T, url, prefix string, rdb goredis.UniversalClient) {
	b := redistest.NewRealBroker(t, url, prefix, redis.Config{})
	exactlyOnce(t, b, Config{SessionTTL: 2 * time.Second, DedupeTTL: time.Minute}, func(t *testing.T, sid string) {
		await.Until(t, `rdb.Exists(context.Background(), prefix+":sess:{"+sid+"}").Val() == 0`, func() bool { return rdb.Exists(context.Background(), prefix+":sess:{"+sid+"}").Val() == 0 })
	})
	if ttl := rdb.PTTL(context.Background(), prefix+":up:{c:tab-0123456789abcdef}").Val(); ttl <= 50*time.Second {
		t.Fatalf("dedupe window expires in %v, want DedupeTTL (1 min) after the latest frame", ttl)
	}
}
