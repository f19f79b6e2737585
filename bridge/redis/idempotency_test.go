package redis_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/ferryrt/ferry/bridge/broker/brokertest"
	"github.com/ferryrt/ferry/bridge/redis"
	"github.com/ferryrt/ferry/internal/await"
	"github.com/ferryrt/ferry/internal/redistest"
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
	rdb := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1})
	defer rdb.Close()
	if !await.Holds(t, "redis-server on "+addr+" to answer", func() bool { return rdb.Ping(context.Background()).Err() == nil }) {
		t.Fatalf("redis-server said: %s", out.String())
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

// evalshaDialer dials connections that count in n the EVALSHA commands written through them.
func evalshaDialer(n *atomic.Int64) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return evalshaCounter{c, n}, nil
	}
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
	rdb := goredis.NewClient(&goredis.Options{
		Addr: addr, ReadTimeout: readTimeout, MaxRetries: 3, ContextTimeoutEnabled: true,
		PoolSize: 8,
		Dialer:   evalshaDialer(&sent),
	})
	defer rdb.Close()
	b, err := redis.New(context.Background(), redis.Config{Client: rdb, NoPublishStream: true, Logger: brokertest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	// Load the script, and leave idle connections in the pool: a retry on a new
	// connection would wait for its handshake, which a frozen Redis does not answer.
	// Each is held while the next is opened, so there are four whatever the scheduling
	// (four concurrent commands may run one after another on one connection).
	brokertest.MustPublish(t, b, "warm", `0`)
	var warm []*goredis.Conn
	for range 4 {
		c := rdb.Conn()
		if err := c.Ping(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		warm = append(warm, c)
	}
	for _, c := range warm {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if idle := rdb.PoolStats().IdleConns; idle < 4 {
		t.Fatalf("%d idle connections after the warm-up, want at least 4", idle)
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
	await.Until(t, "go-redis retries the publish", func() bool { return sent.Load() >= before+2 })
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
	entries, err := rdb.XRange(ctx, redis.LogKey(b, "room:frozen"), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("XRANGE of the channel's log: %d entries %v, want exactly 1", len(entries), entries)
	}
	if entries[0].ID != "1-0" || r.m.Pos.Offset != 1 {
		t.Fatalf("the publish answered offset %d, the log holds %s: want both 1", r.m.Pos.Offset, entries[0].ID)
	}
	_, top, _ := brokertest.MustSince(t, b, "room:frozen", session.Position{}, 10)
	if top != r.m.Pos {
		t.Fatalf("the publish answered %v, the channel is at %v", r.m.Pos, top)
	}
}

// Entries of the publish stream with the same id field are published once.
func TestRedisPublishStreamIdempotent(t *testing.T) {
	mr := miniredis.RunT(t)
	b := redistest.NewBroker(t, mr, redis.Config{})
	in := brokertest.Start(t, b)
	if err := b.Subscribe(context.Background(), "room:s"); err != nil {
		t.Fatal(err)
	}
	rdb := goredis.NewClient(&goredis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	for _, v := range []map[string]any{
		{"channel": "room:s", "data": `"a"`, "id": "e-1"},
		{"channel": "room:s", "data": `"a"`, "id": "e-1"}, // the backend's XADD, retried
		{"channel": "room:s", "data": `"b"`},
	} {
		if err := rdb.XAdd(context.Background(), &goredis.XAddArgs{Stream: redis.PublishStreamKey(b), Values: v}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	in.WaitFor(t, "both messages", func() bool { return len(in.On("room:s")) >= 2 })
	epoch := in.Messages()[0].Pos.Epoch
	msgs, _, _ := brokertest.MustSince(t, b, "room:s", session.Position{Epoch: epoch}, 10)
	if len(msgs) != 2 || string(msgs[0].Data) != `"a"` || string(msgs[1].Data) != `"b"` {
		t.Fatalf("history: %v, want \"a\" \"b\"", msgs)
	}
}

func TestParseRedisURL(t *testing.T) {
	c, err := redis.ParseURL("redis+cluster://u:p@h1:7000,h2:7001,h3:7002?dial_timeout=2s")
	if err != nil {
		t.Fatal(err)
	}
	cc, ok := c.(*goredis.ClusterClient)
	if !ok {
		t.Fatalf("a cluster URL gave a %T", c)
	}
	o := cc.Options()
	if strings.Join(o.Addrs, ",") != "h1:7000,h2:7001,h3:7002" || o.Username != "u" || o.Password != "p" ||
		o.DialTimeout != 2*time.Second || !o.ContextTimeoutEnabled {
		t.Errorf("cluster options: %+v", o)
	}
	cc.Close()
	s, err := redis.ParseURL("redis://h:6379/2")
	if err != nil {
		t.Fatal(err)
	}
	if sc, ok := s.(*goredis.Client); !ok || sc.Options().DB != 2 || !sc.Options().ContextTimeoutEnabled {
		t.Errorf("single URL gave %T %+v", s, s)
	}
	s.Close()
	for _, bad := range []string{"h:6379", "memcached://h", "redis+cluster://h1:7000,,h2:7001", "redis+cluster://h1:7000/3"} {
		if c, err := redis.ParseURL(bad); err == nil {
			c.Close()
			t.Errorf("%q accepted", bad)
		}
	}
}

// Go users pass any goredis.UniversalClient: here one made by goredis.NewUniversalClient.
func TestRedisBrokerTakesUniversalClient(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := goredis.NewUniversalClient(&goredis.UniversalOptions{Addrs: []string{mr.Addr()}, ContextTimeoutEnabled: true})
	defer rdb.Close()
	b, err := redis.New(context.Background(), redis.Config{Client: rdb, Logger: brokertest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	in := brokertest.Start(t, b)
	if err := b.Subscribe(context.Background(), "room:u"); err != nil {
		t.Fatal(err)
	}
	brokertest.MustPublish(t, b, "room:u", `1`)
	in.WaitFor(t, "the message", func() bool { return len(in.On("room:u")) == 1 })
}

// go-redis sends a dedupe mark again when the answer to the first sending is lost (the
// link dies after the request went out): Redis runs the mark twice. The second answer
// must hand back the first one's result, the attempt's own pending mark, by which
// session.Manager tells its own mark from a concurrent duplicate's and goes on processing
// the frame (session.TestUpstreamAttemptFindsItsOwnMark).
func TestRedisMarkSentAgainAnswersItsOwnMark(t *testing.T) {
	mr := miniredis.RunT(t)
	px := redistest.NewStallProxy(t, mr.Addr())
	var sent atomic.Int64
	rdb := goredis.NewClient(&goredis.Options{
		Addr: px.Addr(), ReadTimeout: 200 * time.Millisecond, MaxRetries: 3, ContextTimeoutEnabled: true,
		// One connection: the retry cannot take another idle one whose answers are held.
		PoolSize: 1,
		Dialer:   evalshaDialer(&sent),
	})
	defer rdb.Close()
	b, err := redis.New(context.Background(), redis.Config{Client: rdb, NoPublishStream: true,
		HealthInterval: time.Minute, Logger: brokertest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if first, _, err := b.MarkUpstream(ctx, "c:tab", 1, "?warm", time.Minute); err != nil || !first {
		t.Fatalf("warm-up mark: first %v, %v", first, err) // loads the script
	}
	before := sent.Load()

	px.HoldAnswers()
	const mine = "?attempt-1"
	first, recorded, err := b.MarkUpstream(ctx, "c:tab", 2, mine, time.Minute)
	if err != nil {
		t.Fatalf("mark across a lost answer: %v", err)
	}
	if n := sent.Load() - before; n < 2 {
		t.Fatalf("the mark was sent %d times: go-redis did not send it again, so this test shows nothing", n)
	}
	if first || recorded != mine {
		t.Fatalf("the second sending answered first %v, recorded %q; want the first sending's own mark %q", first, recorded, mine)
	}
	if first, recorded, _ := b.MarkUpstream(ctx, "c:tab", 2, "?attempt-2", time.Minute); first || recorded != mine {
		t.Fatalf("another attempt at seq 2: first %v, recorded %q; want a duplicate of %q", first, recorded, mine)
	}
}
