package bridge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferryrt/ferry/session"
)

// The tests above run on miniredis, a Redis written in Go, whose Lua and streams are
// close to Redis's but not the same program. These run the scripts on a real Redis when
// FERRY_TEST_REDIS_URL names one, and on a real Redis Cluster when
// FERRY_TEST_REDIS_CLUSTER lists the addresses of its nodes (scripts/test.sh starts both:
// a cluster answers CROSSSLOT to any command that touches two hash slots), under a prefix
// of their own that they delete afterwards.

// forEachRealRedis runs test against each real Redis configured, as a subtest.
func forEachRealRedis(t *testing.T, test func(t *testing.T, url, prefix string, rdb redis.UniversalClient)) {
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
			prefix, rdb := realRedis(t, url)
			test(t, url, prefix, rdb)
		})
	}
}

func realRedis(t *testing.T, url string) (prefix string, rdb redis.UniversalClient) {
	t.Helper()
	rdb, err := ParseRedisURL(url)
	if err != nil {
		t.Fatal(err)
	}
	var b [4]byte
	rand.Read(b[:])
	prefix = "ferrytest-" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		onEachMaster(t, rdb, func(ctx context.Context, c *redis.Client) {
			iter := c.Scan(ctx, 0, prefix+":*", 1000).Iterator()
			for iter.Next(ctx) {
				c.Del(ctx, iter.Val())
			}
		})
		rdb.Close()
	})
	return prefix, rdb
}

// onEachMaster runs f on rdb, or on each master of a cluster.
func onEachMaster(t *testing.T, rdb redis.UniversalClient, f func(ctx context.Context, c *redis.Client)) {
	ctx := context.Background()
	switch c := rdb.(type) {
	case *redis.Client:
		f(ctx, c)
	case *redis.ClusterClient:
		var mu sync.Mutex
		err := c.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
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

func newRealBroker(t *testing.T, url, prefix string, cfg RedisConfig) *RedisBroker {
	t.Helper()
	cfg.URL, cfg.Prefix = url, prefix
	cfg.HealthInterval = orDefault(cfg.HealthInterval, 100*time.Millisecond)
	cfg.Logger = testLogger(t)
	b, err := NewRedisBroker(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestRealRedisBroker(t *testing.T) { forEachRealRedis(t, testRealRedisBroker) }

func testRealRedisBroker(t *testing.T, url, prefix string, rdb redis.UniversalClient) {
	ctx := context.Background()
	a := newRealBroker(t, url, prefix, RedisConfig{History: HistoryConfig{Size: 5}, NoPublishStream: true})
	b := newRealBroker(t, url, prefix, RedisConfig{History: HistoryConfig{Size: 5}})
	startBroker(t, a)
	in := startBroker(t, b)
	b.Subscribe(ctx, "room:r")

	// Positions, history, trimming by count.
	_, top, ok := mustSince(t, a, "room:r", session.Position{}, 10)
	if !ok || top.Offset != 0 || !session.ValidEpoch(top.Epoch) {
		t.Fatalf("new channel: %v %v", top, ok)
	}
	for i := 1; i <= 7; i++ {
		if m := mustPublish(t, a, "room:r", fmt.Sprintf(`{"i":%d}`, i)); m.Pos != (session.Position{Epoch: top.Epoch, Offset: uint64(i)}) {
			t.Fatalf("publish %d at %v", i, m.Pos)
		}
	}
	if bm, err := a.Publish(ctx, "room:r", nil, []byte{0, 255}); err != nil || bm.Pos.Offset != 8 {
		t.Fatalf("binary publish: %v %v", bm, err)
	}
	msgs, _, ok := mustSince(t, a, "room:r", session.Position{Epoch: top.Epoch, Offset: 3}, 10)
	if !ok || fmt.Sprint(offsets(msgs)) != "[4 5 6 7 8]" || string(msgs[4].Bin) != "\x00\xff" {
		t.Fatalf("history: %v %v", offsets(msgs), ok)
	}
	if _, _, ok := mustSince(t, a, "room:r", session.Position{Epoch: top.Epoch, Offset: 2}, 10); ok {
		t.Fatal("no reset behind the trimmed history")
	}
	in.waitFor(t, "fan-out", func() bool { return len(in.on("room:r")) == 8 })
	if got := in.on("room:r"); got[7] != "8:bin:\x00\xff" || got[0] != `1:{"i":1}` {
		t.Fatalf("delivered %q", got)
	}

	// The node's pub/sub connection killed under it: it resubscribes and delivers what
	// was published meanwhile, though nothing follows on the channel.
	var killed int64
	onEachMaster(t, rdb, func(ctx context.Context, c *redis.Client) {
		killed += c.ClientKillByFilter(ctx, "TYPE", "pubsub").Val()
	})
	if killed == 0 {
		t.Fatal("no pub/sub connection to kill")
	}
	mustPublish(t, a, "room:r", `"while cut off"`)
	in.waitFor(t, "the message after the kill", func() bool { return len(in.on("room:r")) == 9 })
	eventually(t, "ready", func() bool { return b.Ready(ctx) == nil })

	// Dedupe window, against session.Ledger, across the two nodes.
	checkLedger(t, []session.Store{a, b}, "c:real-"+prefix)

	// A backend's XADD is published, in order, exactly once.
	for i := 1; i <= 3; i++ {
		rdb.XAdd(ctx, &redis.XAddArgs{Stream: prefix + ":publish", Values: []any{"channel", "room:r", "data", fmt.Sprint(i)}})
	}
	in.waitFor(t, "the stream's messages", func() bool { return len(in.on("room:r")) == 12 })
	if got := in.on("room:r")[9:]; fmt.Sprint(got) != "[10:1 11:2 12:3]" {
		t.Fatalf("from the stream: %v", got)
	}

	// Presence and its events.
	b.Subscribe(ctx, PresenceChannel("room:r"))
	p := NewRedisPresence(a, PresenceConfig{Logger: testLogger(t)})
	defer p.Close()
	m := PresenceMember{Session: "s", User: "ann"}
	for range 2 {
		if err := p.Join(ctx, m, "room:r"); err != nil {
			t.Fatal(err)
		}
	}
	if got := memberList(t, p, "room:r"); got != "[{s ann}]" {
		t.Fatalf("members: %s", got)
	}
	if err := p.Leave(ctx, m, "room:r"); err != nil {
		t.Fatal(err)
	}
	in.waitFor(t, "presence events", func() bool { return len(in.events(t, "room:r")) == 2 })
	if got := fmt.Sprint(in.events(t, "room:r")); got != "[join s leave s]" {
		t.Fatalf("events: %s", got)
	}

	// Trimming by age, on Redis's clock.
	aged := newRealBroker(t, url, prefix, RedisConfig{History: HistoryConfig{TTL: 300 * time.Millisecond}, NoPublishStream: true})
	m1 := mustPublish(t, aged, "room:aged", "1")
	eventually(t, "message 1 to age out", func() bool {
		_, _, ok := mustSince(t, aged, "room:aged", session.Position{Epoch: m1.Pos.Epoch}, 10)
		return !ok
	})
	mustPublish(t, aged, "room:aged", "2")
	if msgs, _, ok := mustSince(t, aged, "room:aged", m1.Pos, 10); !ok || fmt.Sprint(offsets(msgs)) != "[2]" {
		t.Fatalf("after 1: %v %v", offsets(msgs), ok)
	}

	// Upstream to a stream, read back with a consumer group.
	up := UpstreamToRedis(rdb, UpstreamConfig{Stream: prefix + ":upstream"})
	if err := up(ctx, Upstream{Session: "s", Seq: 1, Data: json.RawMessage(`{"x":1}`)}); err != nil {
		t.Fatal(err)
	}
	rdb.XGroupCreate(ctx, prefix+":upstream", "svc", "0")
	res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "svc", Consumer: "c", Streams: []string{prefix + ":upstream", ">"}, Block: -1}).Result()
	if err != nil || len(res[0].Messages) != 1 {
		t.Fatalf("upstream: %v %v", res, err)
	}
	if u, err := DecodeUpstream(res[0].Messages[0]); err != nil || string(u.Data) != `{"x":1}` {
		t.Fatalf("upstream entry %+v %v", u, err)
	}
}

// The scenario of issue 18 (see exactlyOnce) with the dedupe scripts on a real Redis:
// the session expires by its key's TTL, in real time.
func TestRealRedisExactlyOnceAcrossSessions(t *testing.T) {
	forEachRealRedis(t, testRealRedisExactlyOnce)
}

func testRealRedisExactlyOnce(t *testing.T, url, prefix string, rdb redis.UniversalClient) {
	broker := newRealBroker(t, url, prefix, RedisConfig{})
	exactlyOnce(t, broker, Config{SessionTTL: 2 * time.Second, DedupeTTL: time.Minute}, func(t *testing.T, sid string) {
		waitUntil(t, func() bool { return rdb.Exists(context.Background(), prefix+":sess:{"+sid+"}").Val() == 0 })
	})
	if ttl := rdb.PTTL(context.Background(), prefix+":up:{c:tab-0123456789abcdef}").Val(); ttl <= 50*time.Second {
		t.Fatalf("dedupe window expires in %v, want DedupeTTL (1 min) after the latest frame", ttl)
	}
}

// clusterPair starts two brokers (two nodes) on the Redis Cluster of
// FERRY_TEST_REDIS_CLUSTER under a prefix of the test's own, and returns a
// client of the cluster, both brokers and what the second one receives.
func clusterPair(t *testing.T) (cc *redis.ClusterClient, a, b *RedisBroker, in *inbox) {
	t.Helper()
	addrs := os.Getenv("FERRY_TEST_REDIS_CLUSTER")
	if addrs == "" {
		t.Skip("FERRY_TEST_REDIS_CLUSTER not set: no Redis Cluster to fail over")
	}
	url := "redis+cluster://" + addrs
	prefix, rdb := realRedis(t, url)
	a = newRealBroker(t, url, prefix, RedisConfig{NoPublishStream: true})
	b = newRealBroker(t, url, prefix, RedisConfig{NoPublishStream: true})
	startBroker(t, a)
	return rdb.(*redis.ClusterClient), a, b, startBroker(t, b)
}

// A master of the cluster hands its slots over to its replica (CLUSTER FAILOVER, as an
// operator or a managed Redis does it) while a node is subscribed to a channel it owns:
// the subscription survives, publishing continues on the new master at the next offset
// of the same epoch, and the node delivers what follows, once.
func TestRealRedisClusterFailover(t *testing.T) {
	cc, a, b, in := clusterPair(t)
	ctx := context.Background()
	if err := b.Subscribe(ctx, "room:f"); err != nil {
		t.Fatal(err)
	}
	m1 := mustPublish(t, a, "room:f", "1")
	in.waitFor(t, "the first message", func() bool { return len(in.on("room:f")) == 1 })

	master, err := cc.MasterForKey(ctx, a.keys.meta("room:f"))
	if err != nil {
		t.Fatal(err)
	}
	id, err := master.ClusterMyID(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	replicas, err := master.ClusterSlaves(ctx, id).Result()
	if err != nil || len(replicas) == 0 {
		t.Fatalf("replicas of %s: %v %v", master.Options().Addr, replicas, err)
	}
	f := strings.Fields(replicas[0])
	if len(f) < 2 {
		t.Fatalf("CLUSTER REPLICAS line %q", replicas[0])
	}
	replicaAddr, _, _ := strings.Cut(f[1], "@")
	replica := redis.NewClient(&redis.Options{Addr: replicaAddr})
	defer replica.Close()
	if err := replica.Do(ctx, "CLUSTER", "FAILOVER").Err(); err != nil {
		t.Fatalf("CLUSTER FAILOVER on %s: %v", replicaAddr, err)
	}
	eventually(t, "the replica to become master", func() bool {
		role, err := replica.Do(ctx, "ROLE").Slice()
		return err == nil && len(role) > 0 && role[0] == "master"
	})

	var m2 *session.Message
	eventually(t, "a publish on the new master", func() bool {
		m2, err = a.Publish(ctx, "room:f", json.RawMessage("2"), nil)
		return err == nil
	})
	if m2.Pos != (session.Position{Epoch: m1.Pos.Epoch, Offset: 2}) {
		t.Fatalf("after the failover the publish got %v, want offset 2 of epoch %s", m2.Pos, m1.Pos.Epoch)
	}
	in.waitFor(t, "the message after the failover", func() bool { return len(in.on("room:f")) == 2 })
	if got := fmt.Sprint(in.on("room:f")); got != "[1:1 2:2]" {
		t.Fatalf("delivered %s", got)
	}
	eventually(t, "the subscribed node ready", func() bool { return b.Ready(ctx) == nil })
}

// TestRealRedisClusterMasterKilled kills (SIGKILL) the master of a channel's slot on the
// real cluster, after WAIT has seen its write reach the replica: once the replica has taken
// over (the cluster's node timeout plus an election), publishing goes on at the next offset
// of the same epoch and the subscribed node delivers it. go-redis alone would go on dialing
// the dead master until its periodic slot reload a minute later; the broker reloads the
// slot map on every failed dial (followFailovers). The master must be a process on this
// machine (its INFO process_id); the test kills one of the cluster's masters that still
// has a live replica, so a cluster survives two runs of it.
func TestRealRedisClusterMasterKilled(t *testing.T) {
	cc, a, b, in := clusterPair(t)
	ctx := context.Background()

	// A channel whose master has a connected replica.
	var ch string
	var master *redis.Client
	for i := 0; i < 64 && ch == ""; i++ {
		c := fmt.Sprintf("room:kill%d", i)
		m, err := cc.MasterForKey(ctx, a.keys.meta(c))
		if err != nil {
			t.Fatal(err)
		}
		id, err := m.ClusterMyID(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		reps, _ := m.ClusterSlaves(ctx, id).Result()
		for _, r := range reps {
			if strings.Contains(r, " connected") && !strings.Contains(r, "fail") {
				ch, master = c, m
			}
		}
	}
	if ch == "" {
		t.Fatal("no master of the cluster has a connected replica left to fail over to: start the cluster again (scripts/redis-cluster.sh)")
	}
	if err := b.Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	m1 := mustPublish(t, a, ch, "1")
	in.waitFor(t, "the first message", func() bool { return len(in.on(ch)) == 1 })
	if n, err := master.Do(ctx, "WAIT", 1, 5000).Int(); err != nil || n < 1 {
		t.Fatalf("WAIT 1 on %s: %d replicas, %v", master.Options().Addr, n, err)
	}
	info, err := master.Info(ctx, "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "process_id:"); ok {
			pid, _ = strconv.Atoi(v)
		}
	}
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		t.Fatalf("the master %s (process_id %d) is not a process of this machine: cannot kill it", master.Options().Addr, pid)
	}
	killed := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}

	// Publishing comes back once the replica serves the slot; well within a minute.
	var m2 *session.Message
	deadline := time.Now().Add(30 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		m2, err = a.Publish(pctx, ch, json.RawMessage("2"), nil)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no publish on %s within 30 s of killing its master: %v", ch, err)
		}
		time.Sleep(100 * time.Millisecond) // pacing the retries, not waiting for an event
	}
	t.Logf("publishing resumed %v after the master was killed", time.Since(killed).Round(time.Millisecond))
	if m2.Pos != (session.Position{Epoch: m1.Pos.Epoch, Offset: 2}) {
		t.Fatalf("after the failover the publish got %v, want offset 2 of epoch %s", m2.Pos, m1.Pos.Epoch)
	}
	in.waitFor(t, "the message after the failover", func() bool { return len(in.on(ch)) == 2 })
	if got := fmt.Sprint(in.on(ch)); got != "[1:1 2:2]" {
		t.Fatalf("delivered %s", got)
	}
}
