package redis

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"

	goredis "github.com/redis/go-redis/v9"
)

// ParseURL returns a go-redis client for a Redis URL, as Config.URL takes it:
//
//   - redis://[user:password@]host:port/db (rediss:// for TLS): one Redis, with go-redis
//     options as query parameters (goredis.ParseURL);
//   - redis+cluster://[user:password@]host1:port1,host2:port2,... (rediss+cluster:// for
//     TLS): a Redis Cluster, reached through any of the listed nodes, with the query
//     parameters of goredis.ParseClusterURL. A cluster has no database number.
//
// The client fails fast when Redis is down (two dial attempts per try) and bounds each
// command by its context's deadline (ContextTimeoutEnabled). It keeps go-redis's retries:
// every publish carries an id, so a retried publish lands once.
func ParseURL(raw string) (goredis.UniversalClient, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, fmt.Errorf("bridge: redis URL %.100q: want redis://, rediss://, redis+cluster:// or rediss+cluster://", raw)
	}
	switch scheme {
	case "redis", "rediss":
		opt, err := goredis.ParseURL(raw)
		if err != nil {
			return nil, fmt.Errorf("bridge: redis URL: %w", err)
		}
		// Fail fast when Redis is down: each command already retries MaxRetries times
		// (max_retries in the URL), and go-redis's default of five dial attempts per try
		// would make a publish take seconds to report the outage.
		opt.DialerRetries = 2
		// A request's deadline (bridge.Config.StoreTimeout) must bound its Redis calls:
		// go-redis otherwise waits ReadTimeout per try, whatever the context says.
		opt.ContextTimeoutEnabled = true
		return goredis.NewClient(opt), nil
	case "redis+cluster", "rediss+cluster":
		u, err := url.Parse("redis://" + rest)
		if err != nil {
			return nil, fmt.Errorf("bridge: redis cluster URL: %w", err)
		}
		hosts := strings.Split(u.Host, ",")
		for _, h := range hosts {
			if h == "" {
				return nil, fmt.Errorf("bridge: redis cluster URL %.100q: an empty address in the list", raw)
			}
		}
		if u.Path != "" && u.Path != "/" {
			return nil, fmt.Errorf("bridge: redis cluster URL %.100q: a cluster has no database number", raw)
		}
		q := u.Query()
		for _, h := range hosts[1:] {
			q.Add("addr", h)
		}
		u.Scheme, u.Host, u.Path, u.RawQuery = strings.TrimSuffix(scheme, "+cluster"), hosts[0], "", q.Encode()
		opt, err := goredis.ParseClusterURL(u.String())
		if err != nil {
			return nil, fmt.Errorf("bridge: redis cluster URL: %w", err)
		}
		opt.DialerRetries = 2
		opt.ContextTimeoutEnabled = true
		return goredis.NewClusterClient(opt), nil
	}
	return nil, fmt.Errorf("bridge: redis URL %.100q: unknown scheme %q: want redis, rediss, redis+cluster or rediss+cluster", raw, scheme)
}

// blockingTwin returns a client of its own for the broker's blocking reads, with the
// options of c and a small pool; nil for a client of another kind.
func blockingTwin(c goredis.UniversalClient) goredis.UniversalClient {
	switch c := c.(type) {
	case *goredis.Client:
		o := *c.Options()
		o.PoolSize, o.MinIdleConns, o.MaxIdleConns = 2, 0, 1
		return goredis.NewClient(&o)
	case *goredis.ClusterClient:
		o := *c.Options()
		o.PoolSize, o.MinIdleConns, o.MaxIdleConns = 2, 0, 1
		return goredis.NewClusterClient(&o)
	}
	return nil
}

// redisAddr names where c connects, for messages.
func redisAddr(c goredis.UniversalClient) string {
	switch c := c.(type) {
	case *goredis.Client:
		return c.Options().Addr
	case *goredis.ClusterClient:
		return "cluster " + strings.Join(c.Options().Addrs, ",")
	}
	return fmt.Sprintf("%T", c)
}

// followFailovers makes a cluster client reload its slot map as soon as it cannot dial a
// node. go-redis reloads it on MOVED (a graceful failover: the old master answers) but not
// when a master is gone (SIGKILL, a lost host): commands and pub/sub reconnects then go on
// dialing the dead address until the periodic reload, a minute later by default. With this
// hook every refused dial asks for a reload (go-redis runs at most one at a time, 200 ms
// apart), so once a replica has taken over, the next attempt goes to it. It hooks the
// nodes the client knows now and every node it meets later.
func followFailovers(ctx context.Context, c *goredis.ClusterClient) error {
	h := reloadOnDialError{c}
	c.OnNewNode(func(n *goredis.Client) { n.AddHook(h) })
	return c.ForEachShard(ctx, func(_ context.Context, n *goredis.Client) error {
		n.AddHook(h)
		return nil
	})
}

// reloadOnDialError is the go-redis hook of followFailovers.
type reloadOnDialError struct{ c *goredis.ClusterClient }

func (h reloadOnDialError) DialHook(next goredis.DialHook) goredis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := next(ctx, network, addr)
		if err != nil && ctx.Err() == nil {
			h.c.ReloadState(context.Background())
		}
		return conn, err
	}
}

func (reloadOnDialError) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook { return next }

func (reloadOnDialError) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return next
}
