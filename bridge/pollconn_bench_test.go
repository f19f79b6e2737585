package bridge

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ferryrt/ferry/internal/await"
	"github.com/ferryrt/ferry/internal/fclient"
	"github.com/ferryrt/ferry/transport"
)

// BenchmarkTakenOverDeliveryUnderFlood is the delivery latency of one message to 1,000
// polls held on taken-over connections, from the publish to the answer read by each
// client, first with nothing else going on, then with 24 connections pipelining bogus
// polls without end (see TestTakenOverFloodersDoNotStallPolls). Each of the b.N rounds
// of either part delivers one message to every poll; the figures to read are the two
// p99s and their ratio (p99-ratio; the goal is at most 1.5), and flood-answers/round shows
// the flood did run:
//
//	go test -run '^$' -bench TakenOverDeliveryUnderFlood -benchtime 20x ./bridge/
func BenchmarkTakenOverDeliveryUnderFlood(b *testing.B) {
	needTakeOver(b)
	const polls, flooders = 1000, 24
	ts := newTestServer(b, Config{Limits: transport.Limits{NegotiateRate: 1e6, NegotiateBurst: 1e6, MaxConnsPerIP: 10 * polls}})
	clients := make([]*fclient.Client, polls)
	conns := make([]*rawConn, polls)
	for i := range polls {
		clients[i] = subscribed(b, ts, "room:bench")
		conns[i] = dialRaw(b, ts)
		conns[i].poll(clients[i], "hello=1")
	}
	base := ts.Manager().Attached()
	round := func(n int) []time.Duration {
		for i := range polls {
			conns[i].write(conns[i].request("GET", "/poll?"+pollQuery(clients[i], ""), ""))
		}
		await.Until(b, `ts.Manager().Attached() == base+polls`, func() bool { return ts.Manager().Attached() == base+polls })
		lat := make([]time.Duration, polls)
		var wg sync.WaitGroup
		start := time.Now()
		ts.publish(b, "room:bench", n)
		for i := range polls {
			wg.Go(func() {
				conns[i].frames(clients[i])
				lat[i] = time.Since(start)
			})
		}
		wg.Wait()
		return lat
	}
	floods := make([]*flooder, flooders)
	for i := range floods {
		floods[i] = startFlooder(b, ts)
	}
	// pause stops or restarts the flood; stopped, it waits for the server to have
	// answered what was sent, so that quiet rounds are quiet.
	pause := func(on bool) {
		for _, f := range floods {
			f.paused.Store(on)
		}
		if !on {
			return
		}
		for last := int64(-1); ; time.Sleep(20 * time.Millisecond) {
			var n int64
			for _, f := range floods {
				n += f.answers.Load()
			}
			if n == last {
				return
			}
			last = n
		}
	}
	// Quiet and flooded rounds alternate, so that a change in the machine's load meanwhile
	// weighs on both.
	var quietLat, floodLat []time.Duration
	var flood int64 // bogus polls answered during the flooded rounds
	answered := func() (n int64) {
		for _, f := range floods {
			n += f.answers.Load()
		}
		return n
	}
	b.ResetTimer()
	for n := range b.N {
		pause(true)
		quietLat = append(quietLat, round(2*n)...)
		pause(false)
		before := answered()
		floodLat = append(floodLat, round(2*n+1)...)
		flood += answered() - before
	}
	b.StopTimer()
	for _, f := range floods {
		f.close()
	}
	p99 := func(l []time.Duration) time.Duration {
		slices.Sort(l)
		return l[len(l)*99/100]
	}
	quiet, flooded := p99(quietLat), p99(floodLat)
	b.ReportMetric(float64(quiet.Microseconds())/1000, "p99-quiet-ms")
	b.ReportMetric(float64(flooded.Microseconds())/1000, "p99-flood-ms")
	b.ReportMetric(float64(flooded)/float64(quiet), "p99-ratio")
	b.ReportMetric(float64(flood)/float64(b.N), "flood-answers/round")
}

// BenchmarkTakenOverPollCycle is BenchmarkPollCycle on a connection the poll handler
// has taken over, as nearly every long-polling client's is: a message published, then a
// poll that finds it waiting and is answered at once, on one keep-alive connection. The
// figures include the client's side (building the request, reading and decoding the
// answer), which is the same before and after a change of the server's; allocs/op is
// the figure to compare.
func BenchmarkTakenOverPollCycle(b *testing.B) {
	needTakeOver(b)
	pooledOnly(b)
	ts := newTestServer(b, Config{})
	c := subscribed(b, ts, "room:bench")
	conn := dialRaw(b, ts)
	conn.poll(c, "hello=1")
	b.ReportAllocs()
	for b.Loop() {
		ts.publish(b, "room:bench", 1)
		if len(conn.poll(c, "")) == 0 {
			b.Fatal("a poll answered no frames")
		}
	}
}
