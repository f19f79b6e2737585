package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/ferryrt/ferry/session"
)

// startRedisServer runs a redis-server of the test's own on a free loopback port, so
// that the test may stop and continue it by PID; it is killed when the test ends. The
// test is skipped, saying so, when redis-server is not installed (scripts/test.sh
// installs it).
func startRedisServer(t *testing.T, args ...string) (addr string, pid int) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not on PATH: this test needs a real Redis process to stop (scripts/test.sh installs it)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := t.TempDir()
	cmd := exec.Command(bin, append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Kill()
		cmd.Wait()
	})
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer rdb.Close()
	deadline := time.Now().Add(10 * time.Second)
	for rdb.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on %s did not answer: %s", addr, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return addr, cmd.Process.Pid
}

// evalshaCounter is a connection that counts the EVALSHA commands written through it.
type evalshaCounter struct {
	net.Conn
	n *atomic.Int64
}

func (c evalshaCounter) Write(p []byte) (int, error) {
	if bytes.Contains(bytes.ToLower(p), []byte("\r\nevalsha\r\n")) {
		c.n.Add(1)
	}
	return c.Conn.Write(p)
}

// The defect of issue 16: Redis freezes (a slow fork, a failover, a network stall) while
// a publish is under way; go-redis's read timeout passes and it sends the publish script
// again, while the first attempt is still queued in Redis. Both run once Redis resumes.
// The publish must land once, and its answer (from whichever attempt go-redis reads) must
// be the position it landed at.
func TestRedisFrozenMidPublishLandsOnce(t *testing.T) {
	addr, pid := startRedisServer(t)
	var sent atomic.Int64
	const readTimeout = 300 * time.Millisecond
	rdb := redis.NewClient(&redis.Options{
		Addr: addr, ReadTimeout: readTimeout, MaxRetries: 3, ContextTimeoutEnabled: true,
		PoolSize: 8,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return evalshaCounter{c, &sent}, nil
		},
	})
	defer rdb.Close()
	b, err := NewRedisBroker(context.Background(), RedisConfig{Client: rdb, NoPublishStream: true, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	// Load the script, and leave idle connections in the pool: a retry on a new
	// connection would wait for its handshake, which a frozen Redis does not answer.
	mustPublish(t, b, "warm", `0`)
	warm := make(chan error, 4)
	for range 4 {
		go func() { warm <- rdb.Do(ctx, "CLIENT", "ID").Err() }()
	}
	for range 4 {
		if err := <-warm; err != nil {
			t.Fatal(err)
		}
	}
	before := sent.Load()

	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			syscall.Kill(pid, syscall.SIGCONT)
		}
	}()
	type result struct {
		m   *session.Message
		err error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		m, err := b.Publish(ctx, "room:frozen", json.RawMessage(`{"n":1}`), nil)
		done <- result{m, err}
	}()
	// Redis stays frozen until go-redis has given up on the first attempt and sent the
	// script again.
	eventually(t, "go-redis retries the publish", func() bool { return sent.Load() >= before+2 })
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	var r result
	select {
	case r = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the publish got no answer after Redis resumed")
	}
	if r.err != nil {
		t.Fatalf("publish across the freeze: %v, want the position it landed at", r.err)
	}
	entries, err := rdb.XRange(ctx, b.keys.log("room:frozen"), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("XRANGE of the channel's log: %d entries %v, want exactly 1", len(entries), entries)
	}
	if entries[0].ID != "1-0" || r.m.Pos.Offset != 1 {
		t.Fatalf("the publish answered offset %d, the log holds %s: want both 1", r.m.Pos.Offset, entries[0].ID)
	}
	_, top, _ := mustSince(t, b, "room:frozen", session.Position{}, 10)
	if top != r.m.Pos {
		t.Fatalf("the publish answered %v, the channel is at %v", r.m.Pos, top)
	}
}

// The same Idempotency-Key twice on POST /api/publish: the second is answered with the
// first's position and publishes nothing; another payload under the key is refused with
// 422; the key is per channel. On both brokers.
func TestPublishIdempotencyKey(t *testing.T) {
	brokers := map[string]func(t *testing.T) Broker{
		"memory":    func(t *testing.T) Broker { return NewMemoryBroker(MemoryConfig{}) },
		"miniredis": func(t *testing.T) Broker { return newRedisBroker(t, miniredis.RunT(t), RedisConfig{}) },
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
			for _, bad := range []string{strings.Repeat("x", MaxIdempotencyKeyLen+1), "with space", "é"} {
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
				b = NewMemoryBroker(MemoryConfig{IdempotencyTTL: time.Minute, Now: clock})
			} else {
				mr = miniredis.RunT(t)
				b = newRedisBroker(t, mr, RedisConfig{IdempotencyTTL: time.Minute})
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

// Entries of the publish stream with the same id field are published once.
func TestRedisPublishStreamIdempotent(t *testing.T) {
	mr := miniredis.RunT(t)
	b := newRedisBroker(t, mr, RedisConfig{})
	in := startBroker(t, b)
	if err := b.Subscribe(context.Background(), "room:s"); err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	for _, v := range []map[string]any{
		{"channel": "room:s", "data": `"a"`, "id": "e-1"},
		{"channel": "room:s", "data": `"a"`, "id": "e-1"}, // the backend's XADD, retried
		{"channel": "room:s", "data": `"b"`},
	} {
		if err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: b.keys.publishStream(), Values: v}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	in.waitFor(t, "both messages", func() bool { return len(in.on("room:s")) >= 2 })
	in.mu.Lock()
	epoch := in.msgs[0].Pos.Epoch
	in.mu.Unlock()
	msgs, _, _ := mustSince(t, b, "room:s", session.Position{Epoch: epoch}, 10)
	if len(msgs) != 2 || string(msgs[0].Data) != `"a"` || string(msgs[1].Data) != `"b"` {
		t.Fatalf("history: %v, want \"a\" \"b\"", msgs)
	}
}

// Every key of a channel (and of a session, of a dedupe key) hashes to one slot, whatever
// the name holds; the pub/sub name gives the channel back.
func TestRedisKeysShareTheirNameSlot(t *testing.T) {
	if hashSlot("foo") != 12182 || hashSlot("{user1000}.following") != hashSlot("{user1000}.followers") {
		t.Fatal("hashSlot is not Redis's (CLUSTER KEYSLOT foo is 12182)")
	}
	k := keyspace{"ferry"}
	// A presence set goes with the channel of its events.
	for _, name := range []string{"room:1", "$presence:room:1", "$presence:}x{", "}x{", "a}b", "{a}", "%7D", "c:tab-1"} {
		keys := []string{k.meta(name), k.log(name), k.pubsub(name), k.pubID(name, "k:{x}")}
		if ch, ok := strings.CutPrefix(name, "$presence:"); ok {
			keys = append(keys, k.presence(ch))
		}
		want := hashSlot(keys[0])
		for _, key := range keys {
			if got := hashSlot(key); got != want {
				t.Errorf("%q: %s in slot %d, %s in %d", name, keys[0], want, key, got)
			}
		}
		if hashSlot(k.session(name)) != hashSlot(k.session(name)+"x") || hashSlot(k.dedupe(name)) != hashSlot(k.dedupe(name)+"x") {
			t.Errorf("%q: the session or dedupe key has no whole hash tag: %s %s", name, k.session(name), k.dedupe(name))
		}
		if ch, ok := k.channelOf(k.pubsub(name)); !ok || ch != name {
			t.Errorf("channelOf(%s) = %q %v, want %q", k.pubsub(name), ch, ok, name)
		}
	}
	if tag("a}b") == tag("a%7Db") {
		t.Error("two names share a tag")
	}
	if _, err := (RedisConfig{Prefix: "fe{rry"}).withDefaults(); err == nil {
		t.Error("a prefix with a brace was accepted")
	}
}

// hashSlot is Redis Cluster's key slot: CRC16 of the hash tag (the part between the first
// '{' and the first '}' after it, if not empty) or of the key, mod 16384.
func hashSlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}

func TestParseRedisURL(t *testing.T) {
	c, err := ParseRedisURL("redis+cluster://u:p@h1:7000,h2:7001,h3:7002?dial_timeout=2s")
	if err != nil {
		t.Fatal(err)
	}
	cc, ok := c.(*redis.ClusterClient)
	if !ok {
		t.Fatalf("a cluster URL gave a %T", c)
	}
	o := cc.Options()
	if strings.Join(o.Addrs, ",") != "h1:7000,h2:7001,h3:7002" || o.Username != "u" || o.Password != "p" ||
		o.DialTimeout != 2*time.Second || !o.ContextTimeoutEnabled {
		t.Errorf("cluster options: %+v", o)
	}
	cc.Close()
	s, err := ParseRedisURL("redis://h:6379/2")
	if err != nil {
		t.Fatal(err)
	}
	if sc, ok := s.(*redis.Client); !ok || sc.Options().DB != 2 || !sc.Options().ContextTimeoutEnabled {
		t.Errorf("single URL gave %T %+v", s, s)
	}
	s.Close()
	for _, bad := range []string{"h:6379", "memcached://h", "redis+cluster://h1:7000,,h2:7001", "redis+cluster://h1:7000/3"} {
		if c, err := ParseRedisURL(bad); err == nil {
			c.Close()
			t.Errorf("%q accepted", bad)
		}
	}
}

// Go users pass any redis.UniversalClient: here one made by redis.NewUniversalClient.
func TestRedisBrokerTakesUniversalClient(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{mr.Addr()}, ContextTimeoutEnabled: true})
	defer rdb.Close()
	b, err := NewRedisBroker(context.Background(), RedisConfig{Client: rdb, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	in := startBroker(t, b)
	if err := b.Subscribe(context.Background(), "room:u"); err != nil {
		t.Fatal(err)
	}
	mustPublish(t, b, "room:u", `1`)
	in.waitFor(t, "the message", func() bool { return len(in.on("room:u")) == 1 })
}

// The memory broker's keys are bounded: beyond MaxIdempotencyKeys the oldest goes first,
// counted, and a retry with it publishes again.
func TestMemoryIdempotencyKeysBounded(t *testing.T) {
	b := NewMemoryBroker(MemoryConfig{MaxIdempotencyKeys: 2})
	defer b.Close()
	pub := func(key string) uint64 {
		t.Helper()
		m, err := b.Publish(WithIdempotencyKey(context.Background(), key), "room:m", json.RawMessage(`1`), nil)
		if err != nil {
			t.Fatal(err)
		}
		return m.Pos.Offset
	}
	pub("a")
	pub("b")
	if pub("b") != 2 || b.IdempotencyEvictions() != 0 {
		t.Fatal("a retry within the bound published again")
	}
	pub("c") // forgets a
	if got := pub("a"); got != 4 || b.IdempotencyEvictions() < 1 {
		t.Fatalf("the forgotten key: offset %d, evictions %d; want a new publish at 4, counted", got, b.IdempotencyEvictions())
	}
}
