package redis_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/ferryrt/ferry/bridge/broker"
	"github.com/ferryrt/ferry/bridge/broker/brokertest"
	"github.com/ferryrt/ferry/bridge/presence"
	"github.com/ferryrt/ferry/bridge/redis"
	"github.com/ferryrt/ferry/internal/await"
	"github.com/ferryrt/ferry/internal/redistest"
	"github.com/ferryrt/ferry/session"
)

// The tests above run on miniredis, a Redis written in Go, whose Lua and streams are
// close to Redis's but not the same program. These run the scripts on a real Redis when
// FERRY_TEST_REDIS_URL names one, and on a real Redis Cluster when
// FERRY_TEST_REDIS_CLUSTER lists the addresses of its nodes (scripts/test.sh starts both:
// a cluster answers CROSSSLOT to any command that touches two hash slots), under a prefix
// of their own that they delete afterwards.

func TestRealRedisBroker(t *testing.T) { redistest.ForEachReal(t, testRealRedisBroker) }

func testRealRedisBroker(t *testing.T, url, prefix string, rdb goredis.UniversalClient) {
	ctx := context.Background()
	a := redistest.NewRealBroker(t, url, prefix, redis.Config{History: broker.HistoryConfig{Size: 5}, NoPublishStream: true})
	b := redistest.NewRealBroker(t, url, prefix, redis.Config{History: broker.HistoryConfig{Size: 5}})
	brokertest.Start(t, a)
	in := brokertest.Start(t, b)
	b.Subscribe(ctx, "room:r")

	// Positions, history, trimming by count.
	_, top, ok := brokertest.MustSince(t, a, "room:r", session.Position{}, 10)
	if !ok || top.Offset != 0 || !session.ValidEpoch(top.Epoch) {
		t.Fatalf("new channel: %v %v", top, ok)
	}
	for i := 1; i <= 7; i++ {
		if m := brokertest.MustPublish(t, a, "room:r", fmt.Sprintf(`{"i":%d}`, i)); m.Pos != (session.Position{Epoch: top.Epoch, Offset: uint64(i)}) {
			t.Fatalf("publish %d at %v", i, m.Pos)
		}
	}
	if bm, err := a.Publish(ctx, "room:r", nil, []byte{0, 255}); err != nil || bm.Pos.Offset != 8 {
		t.Fatalf("binary publish: %v %v", bm, err)
	}
	msgs, _, ok := brokertest.MustSince(t, a, "room:r", session.Position{Epoch: top.Epoch, Offset: 3}, 10)
	if !ok || fmt.Sprint(brokertest.Offsets(msgs)) != "[4 5 6 7 8]" || string(msgs[4].Bin) != "\x00\xff" {
		t.Fatalf("history: %v %v", brokertest.Offsets(msgs), ok)
	}
	if _, _, ok := brokertest.MustSince(t, a, "room:r", session.Position{Epoch: top.Epoch, Offset: 2}, 10); ok {
		t.Fatal("no reset behind the trimmed history")
	}
	in.WaitFor(t, "fan-out", func() bool { return len(in.On("room:r")) == 8 })
	if got := in.On("room:r"); got[7] != "8:bin:\x00\xff" || got[0] != `1:{"i":1}` {
		t.Fatalf("delivered %q", got)
	}

	// The node's pub/sub connection killed under it: it resubscribes and delivers what
	// was published meanwhile, though nothing follows on the channel.
	var killed int64
	redistest.OnEachMaster(t, rdb, func(ctx context.Context, c *goredis.Client) {
		killed += c.ClientKillByFilter(ctx, "TYPE", "pubsub").Val()
	})
	if killed == 0 {
		t.Fatal("no pub/sub connection to kill")
	}
	brokertest.MustPublish(t, a, "room:r", `"while cut off"`)
	in.WaitFor(t, "the message after the kill", func() bool { return len(in.On("room:r")) == 9 })
	await.Until(t, "ready", func() bool { return b.Ready(ctx) == nil })

	// Dedupe window, against session.Ledger, across the two nodes.
	brokertest.CheckLedger(t, []session.Store{a, b}, "c:real-"+prefix)

	// A backend's XADD is published, in order, exactly once.
	for i := 1; i <= 3; i++ {
		rdb.XAdd(ctx, &goredis.XAddArgs{Stream: prefix + ":publish", Values: []any{"channel", "room:r", "data", fmt.Sprint(i)}})
	}
	in.WaitFor(t, "the stream's messages", func() bool { return len(in.On("room:r")) == 12 })
	if got := in.On("room:r")[9:]; fmt.Sprint(got) != "[10:1 11:2 12:3]" {
		t.Fatalf("from the stream: %v", got)
	}

	// presence.Store and its events.
	b.Subscribe(ctx, presence.Channel("room:r"))
	p := redis.NewPresence(a, presence.Config{Logger: brokertest.Logger(t)})
	defer p.Close()
	m := presence.Member{Session: "s", User: "ann"}
	for range 2 {
		if err := p.Join(ctx, m, "room:r"); err != nil {
			t.Fatal(err)
		}
	}
	if got := brokertest.MemberList(t, p, "room:r"); got != "[{s ann}]" {
		t.Fatalf("members: %s", got)
	}
	if err := p.Leave(ctx, m, "room:r"); err != nil {
		t.Fatal(err)
	}
	in.WaitFor(t, "presence events", func() bool { return len(in.Events(t, "room:r")) == 2 })
	if got := fmt.Sprint(in.Events(t, "room:r")); got != "[join s leave s]" {
		t.Fatalf("events: %s", got)
	}
	// Joins at once share pipelines, which a cluster splits by node: the due index (a slot
	// of its own) and each channel's set both hold every member.
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			if err := p.Join(ctx, presence.Member{Session: fmt.Sprintf("s%02d", i)}, "room:many"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got, err := p.List(ctx, "room:many"); err != nil || len(got) != 40 {
		t.Fatalf("members after 40 joins at once: %d (%v)", len(got), err)
	}
	if n, err := rdb.ZCard(ctx, redis.PresenceDueKey(a)).Result(); err != nil || n < 40 {
		t.Fatalf("due index after 40 joins at once: %d entries (%v)", n, err)
	}

	// Trimming by age, on Redis's clock.
	aged := redistest.NewRealBroker(t, url, prefix, redis.Config{History: broker.HistoryConfig{TTL: 300 * time.Millisecond}, NoPublishStream: true})
	m1 := brokertest.MustPublish(t, aged, "room:aged", "1")
	await.Until(t, "message 1 to age out", func() bool {
		_, _, ok := brokertest.MustSince(t, aged, "room:aged", session.Position{Epoch: m1.Pos.Epoch}, 10)
		return !ok
	})
	brokertest.MustPublish(t, aged, "room:aged", "2")
	if msgs, _, ok := brokertest.MustSince(t, aged, "room:aged", m1.Pos, 10); !ok || fmt.Sprint(brokertest.Offsets(msgs)) != "[2]" {
		t.Fatalf("after 1: %v %v", brokertest.Offsets(msgs), ok)
	}

	// broker.Upstream to a stream, read back with a consumer group.
	up := redis.UpstreamToStream(rdb, redis.UpstreamConfig{Stream: prefix + ":upstream"})
	if err := up(ctx, broker.Upstream{Session: "s", Seq: 1, Data: json.RawMessage(`{"x":1}`)}); err != nil {
		t.Fatal(err)
	}
	rdb.XGroupCreate(ctx, prefix+":upstream", "svc", "0")
	res, err := rdb.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "svc", Consumer: "c", Streams: []string{prefix + ":upstream", ">"}, Block: -1}).Result()
	if err != nil || len(res[0].Messages) != 1 {
		t.Fatalf("upstream: %v %v", res, err)
	}
	if u, err := redis.DecodeUpstream(res[0].Messages[0]); err != nil || string(u.Data) != `{"x":1}` {
		t.Fatalf("upstream entry %+v %v", u, err)
	}
}

// clusterPair starts two brokers (two nodes) on the Redis Cluster of
// FERRY_TEST_REDIS_CLUSTER under a prefix of the test's own, and returns a
// client of the cluster, both brokers and what the second one receives.
func clusterPair(t *testing.T) (cc *goredis.ClusterClient, a, b *redis.Broker, in *brokertest.Inbox) {
	t.Helper()
	addrs := os.Getenv("FERRY_TEST_REDIS_CLUSTER")
	if addrs == "" {
		t.Skip("FERRY_TEST_REDIS_CLUSTER not set: no Redis Cluster to fail over")
	}
	url := "redis+cluster://" + addrs
	prefix, rdb := redistest.Real(t, url)
	a = redistest.NewRealBroker(t, url, prefix, redis.Config{NoPublishStream: true})
	b = redistest.NewRealBroker(t, url, prefix, redis.Config{NoPublishStream: true})
	brokertest.Start(t, a)
	return rdb.(*goredis.ClusterClient), a, b, brokertest.Start(t, b)
}

// On a cluster, nodes exchange a channel's messages through sharded pub/sub: the publish
// script SPUBLISHes in the channel's slot, and the subscribed node holds one shard
// connection per master, subscribed (SSUBSCRIBE) to the channels of that master's slots.
// Redis's own introspection shows each channel as a shard channel on the master that owns
// its slot and on no other, and no node of the cluster holds a plain subscription to any
// channel's pub/sub name: every message published on one node reached the other through
// its channel's shard alone.
func TestRealRedisClusterShardedPubSub(t *testing.T) {
	cc, a, b, in := clusterPair(t)
	ctx := context.Background()
	var chans []string
	for i := range 12 {
		ch := fmt.Sprintf("room:shard%d", i)
		if err := b.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
		chans = append(chans, ch)
	}
	for i, ch := range chans {
		brokertest.MustPublish(t, a, ch, fmt.Sprint(i))
	}
	in.WaitFor(t, "every channel's message", func() bool { return len(in.Messages()) == len(chans) })
	for i, ch := range chans {
		if got := fmt.Sprint(in.On(ch)); got != fmt.Sprintf("[1:%d]", i) {
			t.Fatalf("%s delivered %s", ch, got)
		}
	}

	masters := map[string]*goredis.Client{}
	var mu sync.Mutex // ForEachMaster's calls run at once
	if err := cc.ForEachMaster(ctx, func(_ context.Context, c *goredis.Client) error {
		mu.Lock()
		masters[c.Options().Addr] = c
		mu.Unlock()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := len(redis.ShardConnections(b)); got != len(masters) {
		t.Fatalf("%d shard connections, want one per master (%d)", got, len(masters))
	}
	owners := map[string]bool{}
	for _, ch := range chans {
		name := redis.PubSubName(b, ch)
		owner, err := cc.MasterForKey(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		owners[owner.Options().Addr] = true
		for addr, m := range masters {
			listed, err := m.PubSubShardChannels(ctx, name).Result()
			if err != nil {
				t.Fatal(err)
			}
			if want := addr == owner.Options().Addr; (len(listed) == 1) != want {
				t.Fatalf("PUBSUB SHARDCHANNELS %s on %s: %v (it owns the slot: %v)", name, addr, listed, want)
			}
		}
		if n, err := owner.PubSubShardNumSub(ctx, name).Result(); err != nil || n[name] != 1 {
			t.Fatalf("PUBSUB SHARDNUMSUB %s on its master: %v %v, want the one subscribed node", name, n, err)
		}
	}
	if len(owners) < 2 {
		t.Fatalf("the channels all live on %v: the test wants them spread over the shards", owners)
	}
	pattern := strings.TrimSuffix(redis.PubSubName(b, "x"), "{x}") + "*"
	if err := cc.ForEachShard(ctx, func(ctx context.Context, c *goredis.Client) error {
		if plain, err := c.PubSubChannels(ctx, pattern).Result(); err != nil || len(plain) != 0 {
			return fmt.Errorf("PUBSUB CHANNELS %s on %s: %v %v, want no plain subscription", pattern, c.Options().Addr, plain, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// Unsubscribing a channel unsubscribes its shard channel, and is not taken for a
	// slot that moved: the connections stay, and the other channels go on.
	if err := b.Unsubscribe(ctx, chans[0]); err != nil {
		t.Fatal(err)
	}
	name := redis.PubSubName(b, chans[0])
	owner, _ := cc.MasterForKey(ctx, name)
	await.Until(t, "the shard channel unsubscribed", func() bool {
		n, err := owner.PubSubShardNumSub(ctx, name).Result()
		return err == nil && n[name] == 0
	})
	ps, _ := redis.PubSub(b)
	brokertest.MustPublish(t, a, chans[1], `"again"`)
	in.WaitFor(t, "a message after the unsubscribe", func() bool { return len(in.On(chans[1])) == 2 })
	if now, up := redis.PubSub(b); now != ps || !up {
		t.Fatal("an unsubscribe replaced the node's pub/sub connections")
	}
}

// A master of the cluster hands its slots over to its replica (CLUSTER FAILOVER, as an
// operator or a managed Redis does it) while a node is subscribed to a channel it owns:
// the subscription survives, publishing continues on the new master at the next offset
// of the same epoch, and the node delivers what follows, once.
func TestRealRedisClusterFailover(t *testing.T) {
	cc, a, b, in := clusterPair(t)
	ctx := context.Background()
	// A channel whose master has a replica to hand over to (another test may have
	// killed a master).
	ch, _, replicaAddr := channelWithReplica(t, cc, a, "room:f")
	if err := b.Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	m1 := brokertest.MustPublish(t, a, ch, "1")
	in.WaitFor(t, "the first message", func() bool { return len(in.On(ch)) == 1 })

	replica := goredis.NewClient(&goredis.Options{Addr: replicaAddr})
	defer replica.Close()
	if err := replica.Do(ctx, "CLUSTER", "FAILOVER").Err(); err != nil {
		t.Fatalf("CLUSTER FAILOVER on %s: %v", replicaAddr, err)
	}
	await.Until(t, "the replica to become master", func() bool {
		role, err := replica.Do(ctx, "ROLE").Slice()
		return err == nil && len(role) > 0 && role[0] == "master"
	})

	var m2 *session.Message
	await.Until(t, "a publish on the new master", func() bool {
		var err error
		m2, err = a.Publish(ctx, ch, json.RawMessage("2"), nil)
		return err == nil
	})
	if m2.Pos != (session.Position{Epoch: m1.Pos.Epoch, Offset: 2}) {
		t.Fatalf("after the failover the publish got %v, want offset 2 of epoch %s", m2.Pos, m1.Pos.Epoch)
	}
	in.WaitFor(t, "the message after the failover", func() bool { return len(in.On(ch)) == 2 })
	if got := fmt.Sprint(in.On(ch)); got != "[1:1 2:2]" {
		t.Fatalf("delivered %s", got)
	}
	await.Until(t, "the subscribed node ready", func() bool { return b.Ready(ctx) == nil })
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
	var master *goredis.Client
	for i := 0; i < 64 && ch == ""; i++ {
		c := fmt.Sprintf("room:kill%d", i)
		m, err := cc.MasterForKey(ctx, redis.MetaKey(a, c))
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
	m1 := brokertest.MustPublish(t, a, ch, "1")
	in.WaitFor(t, "the first message", func() bool { return len(in.On(ch)) == 1 })
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

	// Publishing comes back once the replica serves the slot; well within a minute. A
	// publish that fails meanwhile has an unknown outcome (it may have run on the dead
	// master, or on the new one while its answer was lost); one that succeeded must be
	// delivered, at its position.
	acked := map[uint64]string{1: "1"}
	deadline := time.Now().Add(30 * time.Second)
	for try := 0; ; try++ {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		data := fmt.Sprintf(`"try %d"`, try)
		m, err := a.Publish(pctx, ch, json.RawMessage(data), nil)
		cancel()
		if err == nil {
			if m.Pos.Epoch != m1.Pos.Epoch {
				t.Fatalf("after the failover the publish got %v, want epoch %s: history lost although WAIT saw it replicated", m.Pos, m1.Pos.Epoch)
			}
			acked[m.Pos.Offset] = data
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no publish on %s within 30 s of killing its master: %v", ch, err)
		}
		time.Sleep(100 * time.Millisecond) // pacing the retries, not waiting for an event
	}
	t.Logf("publishing resumed %v after the master was killed", time.Since(killed).Round(time.Millisecond))
	for i := range 3 {
		data := fmt.Sprintf(`"after %d"`, i)
		m := brokertest.MustPublish(t, a, ch, data)
		acked[m.Pos.Offset] = data
	}
	var top uint64
	for off := range acked {
		top = max(top, off)
	}
	in.WaitFor(t, "the latest acknowledged message", func() bool {
		got := in.On(ch)
		return len(got) > 0 && strings.HasPrefix(got[len(got)-1], strconv.FormatUint(top, 10)+":")
	})
	// What the node delivers is increasing, and what it skipped (published while it was
	// not subscribed on the new master; catch-up delivers a channel's latest message) is
	// in history, as an attachment behind reads it: at most a resume, no silent gap. Every
	// acknowledged message is there, at its position, with its data.
	seen := map[uint64]string{}
	var prev uint64
	for _, got := range in.On(ch) {
		o, data, _ := strings.Cut(got, ":")
		off, _ := strconv.ParseUint(o, 10, 64)
		if off <= prev {
			t.Fatalf("delivered %v: not increasing", in.On(ch))
		}
		if off > prev+1 {
			msgs, _, ok := brokertest.MustSince(t, b, ch, session.Position{Epoch: m1.Pos.Epoch, Offset: prev}, int(off-prev-1))
			if !ok || len(msgs) != int(off-prev-1) {
				t.Fatalf("delivered %v: the gap after %d is not in history (ok %v, %d messages): a client would get a reset", in.On(ch), prev, ok, len(msgs))
			}
			for _, m := range msgs {
				seen[m.Pos.Offset] = string(m.Data)
			}
		}
		seen[off], prev = data, off
	}
	for off, want := range acked {
		if seen[off] != want {
			t.Fatalf("offset %d: delivered or read %q, acknowledged %q (delivered %v)", off, seen[off], want, in.On(ch))
		}
	}
	// The node's subscription now lives on the new master, as a shard channel.
	name := redis.PubSubName(b, ch)
	cc.ReloadState(ctx) // the test's own client: the brokers reload theirs on failed dials
	if !await.Holds(t, "the shard channel on the new master", func() bool {
		owner, err := cc.MasterForKey(ctx, name)
		if err != nil || owner.Options().Addr == master.Options().Addr {
			return false
		}
		n, err := owner.PubSubShardNumSub(ctx, name).Result()
		return err == nil && n[name] == 1
	}) {
		redistest.OnEachMaster(t, cc, func(ctx context.Context, c *goredis.Client) {
			n, err := c.PubSubShardNumSub(ctx, name).Result()
			t.Logf("master %s: SHARDNUMSUB %v %v", c.Options().Addr, n, err)
		})
		t.FailNow()
	}
	await.Until(t, "the subscribed node ready", func() bool { return b.Ready(ctx) == nil })
}
