package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferryrt/ferry/bridge"
)

func TestParseOptionsLists(t *testing.T) {
	for _, bad := range [][]string{
		{"--api-key", "k", "--channels", "0"},
		{"--target", "gorilla", "--channels", "2"},
		{"--target", "socketio", "--url", "http://127.0.0.1:1,http://127.0.0.1:2"},
		{"--api-key", "k", "--url", "http://127.0.0.1:1,ws://127.0.0.1:2"},
		{"--api-key", "k", "--url", "http://127.0.0.1:1,"},
		{"--api-key", "k", "--server-pid", "12,x"},
		{"--api-key", "k", "--server-pid", "12,-3"},
		{"--api-key", "k", "--channels", "1000", "--rate", "101"}, // over 100,000 publishes a second
		{"--api-key", "k", "--publish-rate-test", "-1s"},
	} {
		if _, err := parseOptions(bad, io.Discard); err == nil {
			t.Errorf("parseOptions(%q) accepted", bad)
		}
	}
	o, err := parseOptions([]string{"--api-key", "k", "--url", "http://127.0.0.1:1, http://127.0.0.2:2", "--channels", "1000",
		"--rate", "10", "--server-pid", "12,34", "--publish-rate-test", "5s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.urls) != 2 || o.urls[0].Host != "127.0.0.1:1" || o.urls[1].Host != "127.0.0.2:2" {
		t.Errorf("urls %v", o.urls)
	}
	if len(o.serverPIDs) != 2 || o.serverPIDs[0] != 12 || o.serverPIDs[1] != 34 || o.channels != 1000 || o.pubTest != 5*time.Second {
		t.Errorf("options %+v", o)
	}
	// The forms of before: one address, one pid, or none ("0").
	for pid, want := range map[string]int{"": 0, "0": 0, "77": 1} {
		o, err := parseOptions([]string{"--api-key", "k", "--server-pid", pid}, io.Discard)
		if err != nil || len(o.serverPIDs) != want || len(o.urls) != 1 || o.channels != 1 {
			t.Errorf("--server-pid %q: %v %v %v", pid, err, o.serverPIDs, o.urls)
		}
	}
}

func TestClientsSpreadOverNodesAndChannels(t *testing.T) {
	o, err := parseOptions([]string{"--api-key", "k", "--url", "http://127.0.0.1:1,http://127.0.0.1:2", "--channels", "3", "--sources", "0"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	e, err := newEnv(o)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []struct {
		host, channel string
		ch            int
	}{{"127.0.0.1:1", "bench-0", 0}, {"127.0.0.1:2", "bench-0", 0}, {"127.0.0.1:1", "bench-1", 1}, {"127.0.0.1:2", "bench-1", 1},
		{"127.0.0.1:1", "bench-2", 2}, {"127.0.0.1:2", "bench-2", 2}, {"127.0.0.1:1", "bench-0", 0}} {
		c := e.newClient(i, false).(*ferryWS)
		if c.u.Host != want.host || c.channel != want.channel || c.cs.ch != want.ch {
			t.Errorf("client %d on %s channel %s (%d), want %s %s (%d)", i, c.u.Host, c.channel, c.cs.ch, want.host, want.channel, want.ch)
		}
	}
	// With an even count of channels on two nodes, every channel still has readers on both.
	for c := range 1000 {
		nodes := map[int]bool{}
		for i := c * 2; i < 10000; i += 2000 {
			for _, j := range []int{i, i + 1} {
				if clientChannel(j, 1000, 2) != c {
					t.Fatalf("client %d on channel %d, want %d", j, clientChannel(j, 1000, 2), c)
				}
				nodes[j%2] = true
			}
		}
		if len(nodes) != 2 {
			t.Fatalf("channel %d read on nodes %v only", c, nodes)
		}
	}
	if clientChannel(7, 3, 1) != 1 {
		t.Error("one node: client i is not on channel i mod n")
	}
	if got := channelName("bench", 0, 1); got != "bench" {
		t.Errorf("the one channel is %q, want the prefix itself", got)
	}
	if n := e.d.sources; n != 0 {
		t.Errorf("sources %d with --sources 0", n)
	}
}

func TestDeliverKnowsMessagesByChannel(t *testing.T) {
	st := newStats()
	a, b := seqState{ch: 1}, seqState{ch: 2}
	now := time.Now()
	ts := now.UnixNano()
	seq := seqBase(phaseRate) + 1
	// The same sequence number on two channels is two messages.
	st.deliver(&a, appendChannelPayload(nil, phaseRate, 1, seq, ts, 0), now)
	st.deliver(&b, appendChannelPayload(nil, phaseRate, 2, seq, ts, 0), now)
	if got := st.phases[phaseRate].delivered.Load(); got != 2 {
		t.Fatalf("delivered %d, want 2", got)
	}
	st.deliver(&a, appendChannelPayload(nil, phaseRate, 1, seq, ts, 0), now)
	if got := st.phases[phaseRate].dups.Load(); got != 1 {
		t.Fatalf("dups %d, want 1", got)
	}
	// Another channel's message is not this client's.
	st.deliver(&a, appendChannelPayload(nil, phaseRate, 2, seq+1, ts, 0), now)
	if got := st.unknown.Load(); got != 1 {
		t.Fatalf("unknown %d, want 1", got)
	}
	// A payload without a channel is channel 0's: the form of one channel.
	var one seqState
	st.deliver(&one, appendPayload(nil, phaseRate, seq, ts, 0), now)
	if got := st.phases[phaseRate].delivered.Load(); got != 3 {
		t.Fatalf("delivered %d, want 3", got)
	}
}

func TestProbeSumsProcesses(t *testing.T) {
	self := os.Getpid()
	one, two := newProbe([]int{self}), newProbe([]int{self, self})
	if r1, r2 := one.rss(), two.rss(); r1 <= 0 || r2 < 2*r1-2048 || r2 > 2*r1+2048 {
		t.Errorf("rss of one %d, of the same twice %d", r1, r2)
	}
	if c := two.cpus(); len(c) != 2 || c[0] < 0 || c[1] < 0 {
		t.Errorf("cpus %v", c)
	}
	if c := newProbe([]int{self, 1 << 30}).cpu(); c != -1 {
		t.Errorf("cpu with a missing process: %v, want -1", c)
	}
	if c := newProbe(nil).cpu(); c != -1 || newProbe(nil).rss() != 0 {
		t.Errorf("a probe without pids reports %v", c)
	}
	var pr PhaseResult
	pr.Delivered = 1000
	pr.measureCPU(two, []time.Duration{0, 0}, selfCPU(), time.Second)
	if len(pr.Procs) != 2 || pr.Procs[0].PID != self || pr.Procs[0].Name == "" || pr.ServerCPUSecs < pr.Procs[0].CPUSecs {
		t.Errorf("per-process CPU %+v", pr)
	}
	var single PhaseResult
	single.measureCPU(one, []time.Duration{0}, selfCPU(), time.Second)
	if len(single.Procs) != 1 || single.Procs[0].CPUSecs != single.ServerCPUSecs {
		t.Errorf("one process: %+v", single)
	}
}

func TestSchedulesPublishToEveryChannel(t *testing.T) {
	count := func(sched func(context.Context, func(int))) []int {
		got := make([]int, 3)
		sched(context.Background(), func(ch int) { got[ch]++ })
		return got
	}
	if got := count(steadyRate(100, 50*time.Millisecond, 3)); got[0] != 5 || got[1] != 5 || got[2] != 5 {
		t.Errorf("steady: %v, want 5 to each channel", got)
	}
	if got := count(burstOf(4, 3)); got[0] != 4 || got[1] != 4 || got[2] != 4 {
		t.Errorf("burst: %v, want 4 to each channel", got)
	}
	got := count(publishFor(20*time.Millisecond, 3))
	if got[0] == 0 || got[0]-got[2] > 1 || got[0] < got[2] {
		t.Errorf("publish test: %v, want the channels in turn", got)
	}
	if n := steadyInFlight(10, 1000); n != 10000 {
		t.Errorf("in flight at 10 msg/s on 1000 channels: %d, want a second's worth", n)
	}
	if n := steadyInFlight(500, 1); n != 64 {
		t.Errorf("in flight on one channel: %d, want 64 as before", n)
	}
}

// Two listeners on one server stand for two nodes sharing a broker: every client must
// get every message of its own channel, whichever node it is on and the publish went to.
func TestFerryNodesAndChannels(t *testing.T) {
	srv, err := bridge.New(bridge.Config{APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	mux := http.NewServeMux()
	srv.Mount(mux)
	var pubs [2]atomic.Int64
	var nodes [2]*httptest.Server
	for i := range nodes {
		nodes[i] = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/api/publish") {
				pubs[i].Add(1)
			}
			mux.ServeHTTP(w, r)
		}))
		defer nodes[i].Close()
	}
	self := strconv.Itoa(os.Getpid())
	o, err := parseOptions([]string{
		"--url", nodes[0].URL + "," + nodes[1].URL, "--channels", "3", "--api-key", "k",
		"--clients", "12", "--stall", "1", "--rate", "20", "--duration", "250ms", "--burst", "5",
		"--publish-rate-test", "200ms", "--settle", "50ms", "--drain", "3s", "--max-time", "30s",
		"--server-pid", self + "," + self, "--sources", "4",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	res := checkRun(t, o)
	if res.Nodes != 2 || res.Channels != 3 || res.Unknown != 0 {
		t.Errorf("nodes %d, channels %d, unknown %d", res.Nodes, res.Channels, res.Unknown)
	}
	if pubs[0].Load() == 0 || pubs[1].Load() == 0 {
		t.Errorf("publishes per node %d and %d: not spread", pubs[0].Load(), pubs[1].Load())
	}
	// 5 ticks and 5 bursts to each of 3 channels, read by 4, 4 and 3 clients (the
	// stalled one is the last, on channel 2).
	for _, p := range []*PhaseResult{res.Steady, res.Burst} {
		if p.Published != 15 || p.Expected != 5*4+5*4+5*3 {
			t.Errorf("published %d, expected %d deliveries, want 15 and 55", p.Published, p.Expected)
		}
	}
	p := res.PublishTest
	if p == nil || p.Published == 0 || p.PublishesPerSec <= 0 || p.PublishP99Ms <= 0 || p.Delivered != p.Expected {
		t.Fatalf("publish test %+v", p)
	}
	if len(p.Procs) != 2 || len(res.Steady.Procs) != 2 {
		t.Errorf("per-process CPU %+v", p.Procs)
	}
}
