package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// The storm scenario (--mode storm) measures a reconnect storm: --clients sessions, spread
// over WebSocket, SSE and long-polling and all from one source address (a NAT), follow one
// channel that a publisher feeds at --rate; the bench runs the ferry binary (--ferry-bin)
// itself and restarts it, once per signal of --signals, and reports how long the clients
// take to come back and resume, what they lost, and the server's memory and CPU during the
// storm against the steady state before it. With --nodes 3 the nodes share a redis-server
// the bench starts, and the first node restarts while the publisher uses another.

// StormResult is the outcome of one restart.
type StormResult struct {
	Label    string `json:"label"`
	Scenario string `json:"scenario,omitempty"`
	Time     string `json:"time"`
	Clients  int    `json:"clients"`
	Nodes    int    `json:"nodes"`
	Signal   string `json:"signal"`
	// Affected clients lost their attachment in the restart; Back of them came back.
	Affected int `json:"affected"`
	Back     int `json:"back"`
	// Down is from the signal to the node answering again: /healthz, or a client's
	// attachment if one came first (under a storm, /healthz waits in the accept queue).
	DownMs float64 `json:"down_ms"`
	// Times until each affected client attached again, from the node answering again
	// (0 for clients back earlier, on another node) and from the signal.
	BackP50Ms       float64 `json:"back_p50_ms"`
	BackP99Ms       float64 `json:"back_p99_ms"`
	BackLastMs      float64 `json:"back_last_ms"`
	FromSignalP50Ms float64 `json:"from_signal_p50_ms"`
	FromSignalLast  float64 `json:"from_signal_last_ms"`
	// Resets are reset frames; SilentGaps messages skipped without one (must be 0); Dups
	// messages delivered twice; Behind clients that did not reach the publisher's position
	// within the drain after the storm.
	Resets      int    `json:"resets"`
	SilentGaps  uint64 `json:"silent_gaps"`
	Dups        uint64 `json:"dups"`
	Behind      int    `json:"behind"`
	NewSessions int    `json:"new_sessions"`
	Refused     int    `json:"refused_rounds"`
	ConnFails   int    `json:"failed_rounds"`
	Published   int64  `json:"published"`
	PublishErrs int64  `json:"publish_errors"`
	// Memory and CPU of the restarted node: steady state before the restart, peak and
	// average during the storm (from its start until every client is back, plus 2 s).
	SteadyRSSKiB int64 `json:"steady_rss_kib"`
	// ConnectPeakRSSKiB is the first node's peak while the clients first connected: the
	// same crowd arriving, without a restart, for comparison with PeakRSSKiB.
	ConnectPeakRSSKiB int64   `json:"connect_peak_rss_kib"`
	PeakRSSKiB        int64   `json:"peak_rss_kib"`
	SteadyCPUPct      float64 `json:"steady_cpu_pct"`
	StormCPUPct       float64 `json:"storm_cpu_pct"`
	PeakCPUPct        float64 `json:"peak_cpu_pct"` // highest over any 500 ms
	AfterRSSKiB       int64   `json:"after_rss_kib"`
	// With several nodes, the surviving node whose memory grew most: its steady RSS and
	// its peak while the restarted node's clients moved to it.
	OtherSteadyRSSKiB int64   `json:"other_steady_rss_kib,omitempty"`
	OtherPeakRSSKiB   int64   `json:"other_peak_rss_kib,omitempty"`
	StormWindowMs     float64 `json:"storm_window_ms"`
}

func (r *StormResult) print(w io.Writer) {
	fmt.Fprintf(w, "storm %s: %d clients (ws/sse/longpoll from one address), %d node(s), %s\n", r.Label, r.Clients, r.Nodes, r.Signal)
	fmt.Fprintf(w, "  node down %.0f ms; affected %d, back %d\n", r.DownMs, r.Affected, r.Back)
	fmt.Fprintf(w, "  back after the node answered: p50 %.0f ms, p99 %.0f ms, last %.0f ms (from the signal: p50 %.0f ms, last %.0f ms)\n",
		r.BackP50Ms, r.BackP99Ms, r.BackLastMs, r.FromSignalP50Ms, r.FromSignalLast)
	fmt.Fprintf(w, "  resets %d, silent gaps %d, duplicates %d, behind after drain %d, new sessions %d, refused rounds %d, failed rounds %d\n",
		r.Resets, r.SilentGaps, r.Dups, r.Behind, r.NewSessions, r.Refused, r.ConnFails)
	fmt.Fprintf(w, "  published %d (%d refused while down)\n", r.Published, r.PublishErrs)
	ratio := 0.0
	if r.SteadyRSSKiB > 0 {
		ratio = float64(r.PeakRSSKiB) / float64(r.SteadyRSSKiB)
	}
	fmt.Fprintf(w, "  node RSS: steady %.1f MiB, storm peak %.1f MiB (%.2fx; first connection peak %.1f MiB), after %.1f MiB; CPU: steady %.0f%%, storm %.0f%% (peak %.0f%%) of one core over %.1f s\n",
		float64(r.SteadyRSSKiB)/1024, float64(r.PeakRSSKiB)/1024, ratio, float64(r.ConnectPeakRSSKiB)/1024, float64(r.AfterRSSKiB)/1024, r.SteadyCPUPct, r.StormCPUPct, r.PeakCPUPct, r.StormWindowMs/1000)
	if r.OtherSteadyRSSKiB > 0 {
		fmt.Fprintf(w, "  busiest other node RSS: steady %.1f MiB, peak %.1f MiB (%.2fx)\n",
			float64(r.OtherSteadyRSSKiB)/1024, float64(r.OtherPeakRSSKiB)/1024, float64(r.OtherPeakRSSKiB)/float64(r.OtherSteadyRSSKiB))
	}
}

func (r *StormResult) appendJSON(name string) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.Write(append(b, '\n'))
	return err
}

// stormPublisher publishes to one node at a steady rate and remembers the last accepted
// position.
type stormPublisher struct {
	url, key, channel string
	hc                *http.Client
	mu                sync.Mutex
	ep                string
	off               uint64
	ok, failed        atomic.Int64
}

func (p *stormPublisher) run(ctx context.Context, rate float64) {
	t := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := p.publish(ctx, i); err != nil {
			p.failed.Add(1)
		} else {
			p.ok.Add(1)
		}
	}
}

func (p *stormPublisher) publish(ctx context.Context, i int) error {
	body := fmt.Appendf(nil, `{"channel":%q,"data":{"i":%d,"ts":%d}}`, p.channel, i, time.Now().UnixMilli())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+p.key)
	resp, err := p.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var a struct {
		Epoch  string `json:"epoch"`
		Offset uint64 `json:"offset"`
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("publish: HTTP %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		return err
	}
	p.mu.Lock()
	if a.Epoch != p.ep || a.Offset > p.off {
		p.ep, p.off = a.Epoch, a.Offset
	}
	p.mu.Unlock()
	return nil
}

func (p *stormPublisher) last() (string, uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ep, p.off
}

// runStorm runs the storm scenario and returns one result per signal.
func runStorm(ctx context.Context, o *options, logw io.Writer) ([]*StormResult, error) {
	logf := func(format string, a ...any) { fmt.Fprintf(logw, "ferry-bench: "+format+"\n", a...) }
	work, err := os.MkdirTemp("", "ferry-storm-")
	if err != nil {
		return nil, err
	}
	if o.keepWork {
		logf("work directory (node logs): %s", work)
	} else {
		defer os.RemoveAll(work)
	}
	const apiKey = "storm-bench-key"
	args := []string{"--api-key", apiKey, "--demo=false", "--log-level", "warn"}
	if o.nodes > 1 {
		rp, err := startRedis(ctx, o.redisBin, work)
		if err != nil {
			return nil, err
		}
		defer rp.stop()
		args = append(args, "--redis", "redis://"+rp.addr+"/0", "--secret", "storm-bench-shared-secret-0123456789")
	}
	args = append(args, strings.Fields(o.ferryArgs)...)
	nodes := make([]*node, o.nodes)
	for i := range nodes {
		if nodes[i], err = newNode(fmt.Sprintf("node%d", i), o.ferryBin, work, append(slices.Clone(args), "--node-id", fmt.Sprintf("n%d", i))); err != nil {
			return nil, err
		}
		defer nodes[i].kill()
		if err := nodes[i].start(ctx, nil); err != nil {
			return nil, err
		}
	}
	victim := nodes[0]
	pubNode := nodes[len(nodes)-1]

	env := &stormEnv{o: o, d: &dialer{timeout: 10 * time.Second}}
	for _, n := range nodes {
		env.hosts = append(env.hosts, n.addr)
	}
	env.wsDial = websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 2048, WriteBufferSize: 512,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return env.d.DialContext(ctx, network, addr, nil, 0)
		}}

	clientCtx, stopClients := context.WithCancel(context.Background())
	defer stopClients()
	trs := []string{"websocket", "sse", "longpoll"}
	clients := make([]*stormClient, o.clients)
	var wg sync.WaitGroup
	var ready sync.WaitGroup
	ready.Add(o.clients)
	sem := make(chan struct{}, o.connConc)
	logf("connecting %d clients to %d node(s)", o.clients, len(nodes))
	start := time.Now()
	for i := range clients {
		c := &stormClient{e: env, id: i, tr: trs[i%3]}
		clients[i] = c
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var once sync.Once
			c.run(clientCtx, func() { once.Do(func() { <-sem; ready.Done() }) })
		}()
	}
	connectPeak := make(chan int64, 1)
	connectCtx, connected := context.WithCancel(ctx)
	go func(pid int) {
		var peak int64
		for connectCtx.Err() == nil {
			if s, ok := readSample(pid); ok {
				peak = max(peak, s.rss)
			}
			sleep(connectCtx, 100*time.Millisecond)
		}
		connectPeak <- peak
	}(victim.pid())
	err = waitGroup(ctx, &ready, o.connTimeout)
	connected()
	firstPeak := <-connectPeak
	if err != nil {
		return nil, fmt.Errorf("connecting: %w", err)
	}
	logf("connected in %.1f s", time.Since(start).Seconds())
	defer func() { stopClients(); wg.Wait() }()

	pub := &stormPublisher{url: "http://" + pubNode.addr + o.base + "/api/publish", key: apiKey, channel: o.channel,
		hc: &http.Client{Timeout: 10 * time.Second}}
	pubCtx, stopPub := context.WithCancel(ctx)
	pubDone := make(chan struct{})
	defer func() { stopPub(); <-pubDone; pub.hc.CloseIdleConnections() }()
	go func() { defer close(pubDone); pub.run(pubCtx, o.rate) }()

	var results []*StormResult
	for _, sigName := range strings.Split(o.signals, ",") {
		sig := syscall.SIGTERM
		if sigName == "kill" {
			sig = syscall.SIGKILL
		}
		r := &StormResult{Label: o.label, Scenario: o.scenario, Time: time.Now().UTC().Format(time.RFC3339),
			Clients: o.clients, Nodes: len(nodes), Signal: "SIG" + strings.ToUpper(sigName), ConnectPeakRSSKiB: firstPeak}
		// Steady state.
		logf("steady state for %v", o.steady)
		s0, _ := readSample(victim.pid())
		if err := sleep(ctx, o.steady); err != nil {
			return results, err
		}
		s1, _ := readSample(victim.pid())
		r.SteadyRSSKiB = s1.rss
		r.SteadyCPUPct = cpuPct(s0, s1)
		others := map[*node]int64{} // steady RSS of the other nodes
		for _, n := range nodes[1:] {
			if s, ok := readSample(n.pid()); ok {
				others[n] = s.rss
			}
		}
		othersPeak := map[*node]int64{}
		othersCtx, stopOthers := context.WithCancel(ctx)
		defer stopOthers() // on the early returns; called below otherwise
		othersDone := make(chan struct{})
		go func() {
			defer close(othersDone)
			for othersCtx.Err() == nil {
				for n := range others {
					if s, ok := readSample(n.pid()); ok {
						othersPeak[n] = max(othersPeak[n], s.rss)
					}
				}
				sleep(othersCtx, 100*time.Millisecond)
			}
		}()
		pub0ok, pub0failed := pub.ok.Load(), pub.failed.Load()

		for _, c := range clients {
			c.resetStorm()
		}
		logf("restarting %s with %s", victim.name, r.Signal)
		tSig := time.Now()
		if err := victim.stop(sig); err != nil {
			return results, err
		}
		// Sample the new process from its start (the storm begins before it answers
		// /healthz, which waits in the listen queue with everyone else) until the storm is
		// over.
		samples := make(chan []sample, 1)
		sampleCtx, stopSampling := context.WithCancel(ctx)
		defer stopSampling() // on the early returns; called below otherwise
		sampleFrom := func(pid int) {
			go func() {
				var ss []sample
				t := time.NewTicker(100 * time.Millisecond)
				defer t.Stop()
				for {
					if s, ok := readSample(pid); ok {
						ss = append(ss, s)
					}
					select {
					case <-sampleCtx.Done():
						samples <- ss
						return
					case <-t.C:
					}
				}
			}()
		}
		if err := victim.start(ctx, sampleFrom); err != nil {
			return results, err
		}
		tUp := time.Now()

		// Every client that lost its attachment must attach again; in a cluster, those on
		// other nodes never lose theirs. A client counts as lost once it has noticed.
		deadline := time.Now().Add(o.stormTimeout)
		for {
			affected, back, down := 0, 0, 0
			for _, c := range clients {
				s := c.snapshot()
				if !s.brokeAt.IsZero() {
					affected++
					if !s.backAt.IsZero() {
						back++
					}
				}
				if !s.live {
					down++
				}
			}
			// A single node's clients all lose theirs; with several, wait a moment for the
			// losses to be noticed before calling it done.
			settled := affected == o.clients || (len(nodes) > 1 && time.Since(tUp) > 2*time.Second)
			if settled && down == 0 && back == affected {
				break
			}
			if time.Now().After(deadline) {
				logf("storm timeout: %d affected, %d back, %d down", affected, back, down)
				break
			}
			if err := sleep(ctx, 50*time.Millisecond); err != nil {
				stopSampling()
				return results, err
			}
		}
		sleep(ctx, 2*time.Second)
		stopSampling()
		stopOthers()
		<-othersDone
		for n, steady := range others {
			if steady > 0 && (r.OtherSteadyRSSKiB == 0 || float64(othersPeak[n])/float64(steady) > float64(r.OtherPeakRSSKiB)/float64(r.OtherSteadyRSSKiB)) {
				r.OtherSteadyRSSKiB, r.OtherPeakRSSKiB = steady, othersPeak[n]
			}
		}
		ss := <-samples
		if len(ss) > 1 {
			r.StormWindowMs = ms(ss[len(ss)-1].at.Sub(ss[0].at))
			r.StormCPUPct = cpuPct(ss[0], ss[len(ss)-1])
			for i, s := range ss {
				r.PeakRSSKiB = max(r.PeakRSSKiB, s.rss)
				if i >= 5 {
					r.PeakCPUPct = max(r.PeakCPUPct, cpuPct(ss[i-5], s))
				}
			}
		}

		// Drain: every client must reach what the publisher had got accepted by now.
		ep, off := pub.last()
		drainEnd := time.Now().Add(o.drain)
		for {
			behind := 0
			for _, c := range clients {
				if s := c.snapshot(); s.ep != ep || s.off < off {
					behind++
				}
			}
			r.Behind = behind
			if behind == 0 || time.Now().After(drainEnd) {
				break
			}
			if err := sleep(ctx, 100*time.Millisecond); err != nil {
				return results, err
			}
		}
		if s, ok := readSample(victim.pid()); ok {
			r.AfterRSSKiB = s.rss
		}
		// The node answered again when /healthz did, or earlier if a client attached to it
		// first; in a cluster clients come back on the other nodes before.
		if len(nodes) == 1 {
			for _, c := range clients {
				if s := c.snapshot(); !s.backAt.IsZero() && s.backAt.Before(tUp) {
					tUp = s.backAt
				}
			}
		}
		r.DownMs = ms(tUp.Sub(tSig))
		var fromUp, fromSig []time.Duration
		for _, c := range clients {
			s := c.snapshot()
			r.Resets += s.resets
			r.SilentGaps += s.gaps
			r.Dups += s.dups
			r.NewSessions += s.sessions
			r.Refused += s.refused
			r.ConnFails += s.connFails
			if s.brokeAt.IsZero() {
				continue
			}
			r.Affected++
			if s.backAt.IsZero() {
				continue
			}
			r.Back++
			fromUp = append(fromUp, max(0, s.backAt.Sub(tUp)))
			fromSig = append(fromSig, s.backAt.Sub(tSig))
		}
		r.BackP50Ms, r.BackP99Ms, r.BackLastMs = quantiles(fromUp)
		r.FromSignalP50Ms, _, r.FromSignalLast = quantiles(fromSig)
		r.Published, r.PublishErrs = pub.ok.Load()-pub0ok, pub.failed.Load()-pub0failed
		results = append(results, r)
	}
	return results, nil
}

// quantiles returns the median, the 99th percentile and the largest of ds, in ms.
func quantiles(ds []time.Duration) (p50, p99, last float64) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	slices.Sort(ds)
	at := func(q float64) time.Duration { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
	return ms(at(0.5)), ms(at(0.99)), ms(ds[len(ds)-1])
}

// cpuPct is the CPU used between two samples as a percentage of one core.
func cpuPct(a, b sample) float64 {
	wall := b.at.Sub(a.at)
	if wall <= 0 || b.cpu < a.cpu {
		return 0
	}
	return round1(100 * float64(b.cpu-a.cpu) / float64(wall))
}

// waitGroup waits for wg, ctx or timeout.
func waitGroup(ctx context.Context, wg *sync.WaitGroup, timeout time.Duration) error {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(timeout):
		return fmt.Errorf("not every client attached within %v", timeout)
	}
}
