// Package redistest serves the tests that run against Redis, in bridge/redis and in the
// bridge: brokers on miniredis or on a Redis at an address, a backend's client, and a
// proxy that stalls a Redis (StallProxy). Importing it silences go-redis's own log of
// failed dials, which the outage tests cause on purpose. For tests only.
package redistest

import (
	"cmp"
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/ferryrt/ferry/bridge/broker/brokertest"
	"github.com/ferryrt/ferry/bridge/redis"
)

// quietLog drops go-redis's log lines.
type quietLog struct{}

func (quietLog) Printf(context.Context, string, ...any) {}

func init() { goredis.SetLogger(quietLog{}) }

// NewBroker returns a broker on mr, closed when the test ends.
func NewBroker(t testing.TB, mr *miniredis.Miniredis, cfg redis.Config) *redis.Broker {
	t.Helper()
	return NewBrokerAt(t, mr.Addr(), cfg)
}

// NewBrokerAt returns a broker on the Redis at addr, closed when the test ends. It logs
// into the test's log and checks its pub/sub connection every 50 ms unless cfg says
// otherwise.
func NewBrokerAt(t testing.TB, addr string, cfg redis.Config) *redis.Broker {
	t.Helper()
	cfg.URL = "redis://" + addr
	cfg.HealthInterval = cmp.Or(cfg.HealthInterval, 50*time.Millisecond)
	cfg.Logger = brokertest.Logger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := redis.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// NewBackendClient returns a client on mr, as a backend has, closed when the test ends.
func NewBackendClient(t testing.TB, mr *miniredis.Miniredis) *goredis.Client {
	t.Helper()
	rdb := goredis.NewClient(&goredis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}
