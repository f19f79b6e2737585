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
	"github.com/ferryrt/ferry/bridge/redis"
	"github.com/ferryrt/ferry/internal/await"
	"github.com/ferryrt/ferry/internal/redistest"
	"github.com/ferryrt/ferry/session"
)

// loseTail leaves channel ch as a failover to a replica that missed its newest messages
// does: the log entries after top gone, the stream's last id and the channel's top
// lowered to top, the epoch unchanged. The new master would go on from there.
func loseTail(t *testing.T, rdb goredis.UniversalClient, b *redis.Broker, ch string, top uint64) {
	t.Helper()
	ctx := context.Background()
	log, meta := redis.LogKey(b, ch), redis.MetaKey(b, ch)
	es, err := rdb.XRange(ctx, log, strconv.FormatUint(top+1, 10)+"-0", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if err := rdb.XDel(ctx, log, e.ID).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := rdb.Do(ctx, "XSETID", log, strconv.FormatUint(top, 10)+"-0").Err(); err != nil {
		t.Fatalf("XSETID: %v", err)
	}
	if err := rdb.HSet(ctx, meta, "top", top).Err(); err != nil {
		t.Fatal(err)
	}
}

// appendSilently appends a message at the channel's next offset as a publish on the new
// master does, without the PUBLISH: a publish the subscribed nodes did not hear because
// they were not subscribed to the new master yet.
func appendSilently(t *testing.T, rdb goredis.UniversalClient, b *redis.Broker, ch, data string) {
	t.Helper()
	ctx := context.Background()
	top, err := rdb.HIncrBy(ctx, redis.MetaKey(b, ch), "top", 1).Result()
	if err != nil {
		t.Fatal(err)
	}
	err = rdb.XAdd(ctx, &goredis.XAddArgs{Stream: redis.LogKey(b, ch), ID: strconv.FormatInt(top, 10) + "-0",
		Values: []any{"t", strconv.FormatInt(time.Now().UnixMilli(), 10), "d", data}}).Err()
	if err != nil {
		t.Fatal(err)
	}
}

// checkNoReuse fails t if in got a message of epoch ep on ch whose data is not the one
// published first at its offset (want, by offset): a reused offset taken for the old
// message.
func checkNoReuse(t *testing.T, in *brokertest.Inbox, ch, ep string, want map[uint64]string) {
	t.Helper()
	for _, m := range in.Messages() {
		if m.Channel == ch && m.Pos.Epoch == ep && string(m.Data) != want[m.Pos.Offset] {
			t.Fatalf("delivered %s at %v: the offset's lost message was %q; the reused offset passed for it", m.Data, m.Pos, want[m.Pos.Offset])
		}
	}
}

// last returns the message that in delivered last on ch, as Inbox.On gives it, or "".
func last(in *brokertest.Inbox, ch string) string {
	got := in.On(ch)
	if len(got) == 0 {
		return ""
	}
	return got[len(got)-1]
}

// checkResetThenNext checks that a client of b at each of offs in the lost epoch ep of ch
// is reset to newEp, and that the next message pub publishes is in newEp and reaches in.
func checkResetThenNext(t *testing.T, b, pub broker.Broker, in *brokertest.Inbox, ch, ep, newEp string, offs ...uint64) {
	t.Helper()
	for _, off := range offs {
		if _, top, ok := brokertest.MustSince(t, b, ch, session.Position{Epoch: ep, Offset: off}, 10); ok || top.Epoch != newEp {
			t.Fatalf("a client at offset %d of the lost epoch: ok %v, top %v; want a reset to epoch %s", off, ok, top, newEp)
		}
	}
	m := brokertest.MustPublish(t, pub, ch, `"next"`)
	if m.Pos.Epoch != newEp {
		t.Fatalf("the next publish got %v, want epoch %s", m.Pos, newEp)
	}
	in.WaitFor(t, "the next message", func() bool {
		ms := in.Messages()
		return ms[len(ms)-1].Pos == m.Pos
	})
}

// newEpochDelivered waits until in got a message of ch in an epoch other than ep, and
// returns that epoch.
func newEpochDelivered(t *testing.T, in *brokertest.Inbox, ch, ep string) string {
	t.Helper()
	var got string
	in.WaitFor(t, "a message of "+ch+" in a new epoch", func() bool {
		for _, m := range in.Messages() {
			if m.Channel == ch && m.Pos.Epoch != ep {
				got = m.Pos.Epoch
				return true
			}
		}
		return false
	})
	return got
}

// A failover can lose the newest messages of a channel, which the new master then
// assigns again to other messages in the same epoch. A node that delivered one of the
// lost messages finds it out, after its reconnection (the top is below what it delivered,
// or its offset holds another message) or live (a message comes at that offset with
// another payload), and starts a new epoch: clients get a reset, never a reused offset as
// if it were the message they had. Two nodes finding it at once make one new epoch; a
// reconnection that lost nothing changes nothing.
func TestRealRedisLostTail(t *testing.T) { redistest.ForEachReal(t, testRealRedisLostTail) }

func testRealRedisLostTail(t *testing.T, url, prefix string, rdb goredis.UniversalClient) {
	ctx := context.Background()
	pub := redistest.NewRealBroker(t, url, prefix, redis.Config{NoPublishStream: true})
	b := redistest.NewRealBroker(t, url, prefix, redis.Config{NoPublishStream: true})
	c := redistest.NewRealBroker(t, url, prefix, redis.Config{NoPublishStream: true})
	brokertest.Start(t, pub)
	inB, inC := brokertest.Start(t, b), brokertest.Start(t, c)

	// publish5 publishes 1 to 5 on ch and waits for b and c to deliver 5, and returns
	// the epoch and the data by offset. A node whose subscription was down when it
	// subscribed delivers only 5, the latest, when it is up again (sessions read the
	// rest from history): the previous subtest's reconnection may still be under way.
	publish5 := func(t *testing.T, ch string) (string, map[uint64]string) {
		t.Helper()
		for _, n := range []*redis.Broker{b, c} {
			if err := n.Subscribe(ctx, ch); err != nil {
				t.Fatal(err)
			}
		}
		want := map[uint64]string{}
		var ep string
		for i := 1; i <= 5; i++ {
			m := brokertest.MustPublish(t, pub, ch, fmt.Sprintf(`"old %d"`, i))
			ep, want[m.Pos.Offset] = m.Pos.Epoch, string(m.Data)
		}
		for _, in := range []*brokertest.Inbox{inB, inC} {
			in.WaitFor(t, "message 5 on "+ch, func() bool { return last(in, ch) == `5:"old 5"` })
		}
		return ep, want
	}
	afterwards := func(t *testing.T, ch, ep, newEp string, want map[uint64]string) {
		t.Helper()
		if got, err := rdb.HGet(ctx, redis.MetaKey(b, ch), "epoch").Result(); err != nil || got != newEp {
			t.Fatalf("the channel's epoch is %q (%v), the node delivered epoch %s", got, err, newEp)
		}
		checkResetThenNext(t, b, pub, inB, ch, ep, newEp, 5, 3, 1)
		checkNoReuse(t, inB, ch, ep, want)
		checkNoReuse(t, inC, ch, ep, want)
	}

	t.Run("top below what a node delivered", func(t *testing.T) {
		ch := "room:lost-top"
		ep, want := publish5(t, ch)
		loseTail(t, rdb, b, ch, 3)
		// Both nodes find it: one new epoch.
		redis.Reconnect(b)
		redis.Reconnect(c)
		newEp := newEpochDelivered(t, inB, ch, ep)
		if other := newEpochDelivered(t, inC, ch, ep); other != newEp {
			t.Fatalf("two nodes made two epochs, %s and %s", newEp, other)
		}
		afterwards(t, ch, ep, newEp, want)
	})

	t.Run("offset reused while the nodes were away", func(t *testing.T) {
		ch := "room:lost-reused"
		ep, want := publish5(t, ch)
		loseTail(t, rdb, b, ch, 3)
		appendSilently(t, rdb, b, ch, `"new 4"`)
		appendSilently(t, rdb, b, ch, `"new 5"`)
		redis.Reconnect(b)
		redis.Reconnect(c)
		newEp := newEpochDelivered(t, inB, ch, ep)
		afterwards(t, ch, ep, newEp, want)
	})

	t.Run("offset reused live", func(t *testing.T) {
		ch := "room:lost-live"
		ep, want := publish5(t, ch)
		loseTail(t, rdb, b, ch, 3)
		// The nodes drop 4 (not newer than 5), and see at 5 another message.
		for _, d := range []string{`"new 4"`, `"new 5"`, `"new 6"`} {
			if m := brokertest.MustPublish(t, pub, ch, d); m.Pos.Epoch != ep {
				// A node already made the new epoch: what is left to check is the same.
				break
			}
		}
		newEp := newEpochDelivered(t, inB, ch, ep)
		afterwards(t, ch, ep, newEp, want)
	})

	t.Run("trimmed, not lost", func(t *testing.T) {
		// Messages published while the nodes were away pushed what they delivered last
		// out of history: nothing to compare, and no new epoch.
		ch := "room:trimmed"
		ep, _ := publish5(t, ch)
		for i := 6; i <= 8; i++ {
			appendSilently(t, rdb, b, ch, fmt.Sprintf(`"%d"`, i))
		}
		if err := rdb.XTrimMinID(ctx, redis.LogKey(b, ch), "6-0").Err(); err != nil {
			t.Fatal(err)
		}
		n := len(inB.On(ch))
		redis.Reconnect(b)
		inB.WaitFor(t, "the latest message", func() bool { return len(inB.On(ch)) == n+1 })
		if got := last(inB, ch); got != `8:"8"` {
			t.Fatalf("delivered %s after the reconnection, want 8, the latest", got)
		}
		m := brokertest.MustPublish(t, pub, ch, `"9"`)
		if m.Pos != (session.Position{Epoch: ep, Offset: 9}) {
			t.Fatalf("the next publish got %v, want offset 9 of epoch %s", m.Pos, ep)
		}
	})

	t.Run("nothing lost", func(t *testing.T) {
		ch := "room:kept"
		ep, _ := publish5(t, ch)
		n := len(inB.On(ch))
		ps, _ := redis.PubSub(b)
		redis.Reconnect(b)
		await.Until(t, "the node subscribed again", func() bool {
			now, up := redis.PubSub(b)
			return up && now != ps
		})
		// What comes next is in the same epoch, after 5.
		m := brokertest.MustPublish(t, pub, ch, `"6"`)
		inB.WaitFor(t, "the message after the reconnection", func() bool { return len(inB.On(ch)) == n+1 })
		if m.Pos != (session.Position{Epoch: ep, Offset: 6}) {
			t.Fatalf("after a reconnection that lost nothing, the publish got %v", m.Pos)
		}
		for _, got := range inB.Messages() {
			if got.Channel == ch && got.Pos.Epoch != ep {
				t.Fatalf("delivered %v: a new epoch although nothing was lost", got.Pos)
			}
		}
	})
}

// nodeSource is the channel layer of one node for session.Stream: the broker's messages
// of a channel go to every Deliverer subscribed to it.
type nodeSource struct {
	b    *redis.Broker
	mu   sync.Mutex
	subs map[string][]session.Deliverer
}

func (s *nodeSource) deliver(m *session.Message) {
	s.mu.Lock()
	ds := s.subs[m.Channel]
	s.mu.Unlock()
	for _, d := range ds {
		d.Deliver(m)
	}
}

func (s *nodeSource) Subscribe(ctx context.Context, ch string, d session.Deliverer) (func(), error) {
	s.mu.Lock()
	s.subs[ch] = append(s.subs[ch], d)
	s.mu.Unlock()
	return func() {}, s.b.Subscribe(ctx, ch)
}

func (s *nodeSource) Since(ctx context.Context, ch string, pos session.Position, limit int) ([]*session.Message, session.Position, bool, error) {
	return s.b.Since(ctx, ch, pos, limit)
}

// An attachment that holds a position in the lost range gets a reset frame once its node
// finds the loss, and no msg frame of a reused offset before it.
func TestRealRedisLostTailResetsAttachment(t *testing.T) {
	url := os.Getenv("FERRY_TEST_REDIS_URL")
	if url == "" {
		// scripts/test.sh sets it (and starts the redis-server); CI runs this test there.
		t.Skip("FERRY_TEST_REDIS_URL not set: no real Redis to test against")
	}
	prefix, rdb := redistest.Real(t, url)
	ctx := context.Background()
	pub := redistest.NewRealBroker(t, url, prefix, redis.Config{NoPublishStream: true})
	b := redistest.NewRealBroker(t, url, prefix, redis.Config{NoPublishStream: true})
	brokertest.Start(t, pub)
	src := &nodeSource{b: b, subs: map[string][]session.Deliverer{}}
	if err := b.Start(src.deliver, func(string, string) {}); err != nil {
		t.Fatal(err)
	}
	const ch = "room:lost-attached"
	var last *session.Message
	for i := 1; i <= 5; i++ {
		last = brokertest.MustPublish(t, pub, ch, fmt.Sprintf(`"old %d"`, i))
	}
	ep := last.Pos.Epoch
	st := session.NewStream(src, session.StreamConfig{QueueMessages: 100, QueueBytes: 1 << 20, BatchMessages: 10, BatchBytes: 1 << 20, PageSize: 10})
	done := session.Errorf(session.CodeReconnect, "the test is over")
	defer st.Close(done)
	st.SubscribeContext(ctx, ch, last.Pos, false) // a client that has 1 to 5
	// The attachment is live: the next message arrives as a msg frame.
	m6 := brokertest.MustPublish(t, pub, ch, `"old 6"`)
	frames := make(chan session.Outgoing, 100)
	go func() {
		for {
			out, err := st.Next(ctx, time.Time{})
			if err != nil {
				close(frames)
				return
			}
			for _, o := range out {
				frames <- o
			}
		}
	}()
	next := func(what string) map[string]any {
		t.Helper()
		select {
		case o, ok := <-frames:
			if !ok {
				t.Fatalf("waiting for %s: the attachment closed", what)
			}
			var f map[string]any
			if err := json.Unmarshal(o.JSON, &f); err != nil {
				t.Fatal(err)
			}
			return f
		case <-time.After(10 * time.Second):
			t.Fatalf("timed out waiting for %s", what)
		}
		return nil
	}
	if f := next("the msg frame of 6"); f["t"] != "msg" || f["off"] != float64(6) {
		t.Fatalf("got %v, want the msg frame of %v", f, m6.Pos)
	}

	loseTail(t, rdb, b, ch, 4)
	appendSilently(t, rdb, b, ch, `"new 5"`)
	redis.Reconnect(b)
	brokertest.MustPublish(t, pub, ch, `"new 6"`)
	brokertest.MustPublish(t, pub, ch, `"new 7"`)
	f := next("a reset")
	if f["t"] != "reset" || f["ch"] != ch || f["ep"] == ep {
		t.Fatalf("got %v, want a reset of %s to a new epoch", f, ch)
	}
	// After the reset, messages of the new epoch only.
	m := brokertest.MustPublish(t, pub, ch, `"after"`)
	for {
		f := next("the message after the reset")
		if f["t"] != "msg" {
			continue
		}
		if f["ep"] == ep {
			t.Fatalf("after the reset, a msg frame of the lost epoch: %v", f)
		}
		if f["off"] == float64(m.Pos.Offset) {
			break
		}
	}
	st.Close(done)
	for range frames {
	}
}

// processID returns the process id of the Redis behind c, which must be a process of this
// machine.
func processID(t *testing.T, c *goredis.Client) int {
	t.Helper()
	info, err := c.Info(context.Background(), "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "process_id:"); ok {
			if pid, _ := strconv.Atoi(v); pid > 0 && syscall.Kill(pid, 0) == nil {
				return pid
			}
		}
	}
	t.Fatalf("%s is not a process of this machine", c.Options().Addr)
	return 0
}

// channelWithReplica returns the first of the channels stem0, stem1, ... whose master
// has a connected replica, that master, and the replica's address: a test that kills a
// master leaves its slots without a replica.
func channelWithReplica(t *testing.T, cc *goredis.ClusterClient, b *redis.Broker, stem string) (string, *goredis.Client, string) {
	t.Helper()
	ctx := context.Background()
	for i := range 64 {
		ch := fmt.Sprintf("%s%d", stem, i)
		m, err := cc.MasterForKey(ctx, redis.MetaKey(b, ch))
		if err != nil {
			t.Fatal(err)
		}
		id, err := m.ClusterMyID(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		reps, _ := m.ClusterSlaves(ctx, id).Result()
		for _, r := range reps {
			if f := strings.Fields(r); len(f) > 1 && strings.Contains(r, " connected") && !strings.Contains(r, "fail") {
				addr, _, _ := strings.Cut(f[1], "@")
				return ch, m, addr
			}
		}
	}
	t.Fatal("no master of the cluster has a connected replica left to fail over to: start the cluster again (scripts/redis-cluster.sh)")
	return "", nil, ""
}

// TestRealRedisClusterLostTail loses the newest messages of a channel on the real
// cluster as a failover does: the replica of the channel's master is stopped (SIGSTOP)
// and cut off while two more messages are published and delivered, the master is killed (SIGKILL),
// and the replica, resumed, takes over (CLUSTER FAILOVER TAKEOVER) without them. The
// next publishes reuse their offsets; the subscribed node finds it and the channel
// starts a new epoch: a client at the lost offsets gets a reset, and the node never
// delivers a reused offset of the old epoch.
func TestRealRedisClusterLostTail(t *testing.T) {
	cc, a, b, in := clusterPair(t)
	ctx := context.Background()

	ch, master, replicaAddr := channelWithReplica(t, cc, a, "room:lose")
	replica := goredis.NewClient(&goredis.Options{Addr: replicaAddr})
	defer replica.Close()
	masterPID, replicaPID := processID(t, master), processID(t, replica)

	if err := b.Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	m1 := brokertest.MustPublish(t, a, ch, `"kept"`)
	if n, err := master.Do(ctx, "WAIT", 1, 5000).Int(); err != nil || n < 1 {
		t.Fatalf("WAIT 1 on %s: %d replicas, %v", master.Options().Addr, n, err)
	}
	ep := m1.Pos.Epoch
	want := map[uint64]string{1: `"kept"`}

	if err := syscall.Kill(replicaPID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			syscall.Kill(replicaPID, syscall.SIGCONT)
		}
	}()
	// The stopped replica's kernel would still take in what the master sends it: the
	// master drops the link, and keeps what follows to itself.
	if err := master.Do(ctx, "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{`"lost 2"`, `"lost 3"`} {
		m := brokertest.MustPublish(t, a, ch, d)
		want[m.Pos.Offset] = d
	}
	in.WaitFor(t, "the messages the replica did not get", func() bool { return len(in.On(ch)) == 3 })
	if err := syscall.Kill(masterPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(replicaPID, syscall.SIGCONT)
	stopped = false
	await.Until(t, "the replica to take over", func() bool {
		if err := replica.Do(ctx, "CLUSTER", "FAILOVER", "TAKEOVER").Err(); err != nil && !strings.Contains(err.Error(), "master") {
			t.Logf("CLUSTER FAILOVER TAKEOVER: %v", err)
		}
		role, err := replica.Do(ctx, "ROLE").Slice()
		return err == nil && len(role) > 0 && role[0] == "master"
	})

	// Publish on the new master until it answers; the first publishes reuse offsets 2
	// and 3, unless the node already made the new epoch.
	published := 0
	await.Until(t, "three publishes on "+ch+" after the takeover", func() bool {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if _, err := a.Publish(pctx, ch, json.RawMessage(fmt.Sprintf(`"new %d"`, published)), nil); err == nil {
			published++
		}
		return published == 3
	})
	newEp := newEpochDelivered(t, in, ch, ep)
	checkNoReuse(t, in, ch, ep, want)
	checkResetThenNext(t, b, a, in, ch, ep, newEp, 3)
	checkNoReuse(t, in, ch, ep, want)
	await.Until(t, "the subscribed node ready", func() bool { return b.Ready(ctx) == nil })
}
