package redistest

import (
	"cmp"
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	goredis "github.com/redis/go-redis/v9"

	"github.com/ferryrt/ferry/bridge/broker/brokertest"
	"github.com/ferryrt/ferry/bridge/redis"
)

// ForEachReal runs test against each real Redis configured, as a subtest: the Redis of
// FERRY_TEST_REDIS_URL and the Redis Cluster of FERRY_TEST_REDIS_CLUSTER (its nodes'
// addresses; scripts/test.sh starts both), under a prefix of the subtest's own that is
// deleted afterwards. Without either it skips t.
func ForEachReal(t *testing.T, test func(t *testing.T, url, prefix string, rdb goredis.UniversalClient)) {
	targets := map[string]string{}
	if u := os.Getenv("FERRY_TEST_REDIS_URL"); u != "" {
		targets["single"] = u
	}
	if c := os.Getenv("FERRY_TEST_REDIS_CLUSTER"); c != "" {
		targets["cluster"] = "redis+cluster://" + c
	}
	if len(targets) == 0 {
		t.Skip("neither FERRY_TEST_REDIS_URL nor FERRY_TEST_REDIS_CLUSTER is set: no real Redis to test against")
	}
	for name, url := range targets {
		t.Run(name, func(t *testing.T) {
			prefix, rdb := Real(t, url)
			test(t, url, prefix, rdb)
		})
	}
}

// Real returns a client of the Redis at url and a fresh prefix, whose keys are deleted
// when t ends.
func Real(t *testing.T, url string) (prefix string, rdb goredis.UniversalClient) {
	t.Helper()
	rdb, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	prefix = "ferrytest-" + uuid.NewString()[:8]
	t.Cleanup(func() {
		OnEachMaster(t, rdb, func(ctx context.Context, c *goredis.Client) {
			iter := c.Scan(ctx, 0, prefix+":*", 1000).Iterator()
			for iter.Next(ctx) {
				c.Del(ctx, iter.Val())
			}
		})
		rdb.Close()
	})
	return prefix, rdb
}

// OnEachMaster runs f on rdb, or on each master of a cluster.
func OnEachMaster(t *testing.T, rdb goredis.UniversalClient, f func(ctx context.Context, c *goredis.Client)) {
	ctx := context.Background()
	switch c := rdb.(type) {
	case *goredis.Client:
		f(ctx, c)
	case *goredis.ClusterClient:
		var mu sync.Mutex
		err := c.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error {
			mu.Lock()
			defer mu.Unlock()
			f(ctx, c)
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	}
}

// NewRealBroker returns a broker on the Redis at url under prefix, closed when t ends.
func NewRealBroker(t *testing.T, url, prefix string, cfg redis.Config) *redis.Broker {
	t.Helper()
	cfg.URL, cfg.Prefix = url, prefix
	cfg.HealthInterval = cmp.Or(cfg.HealthInterval, 100*time.Millisecond)
	cfg.Logger = brokertest.Logger(t)
	b, err := redis.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}
