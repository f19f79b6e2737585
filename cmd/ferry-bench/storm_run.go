package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// stormAPIKey is the --api-key the bench gives its nodes, for its publisher.
const stormAPIKey = "storm-bench-key"

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
	nodes, stopNodes, err := startStormNodes(ctx, o, work)
	defer stopNodes()
	if err != nil {
		return nil, err
	}
	cr, err := connectStorm(ctx, o, nodes, logf)
	if err != nil {
		return nil, err
	}
	defer cr.stop()

	pubNode := nodes[len(nodes)-1]
	pub := &stormPublisher{url: "http://" + pubNode.addr + o.base + "/api/publish", key: stormAPIKey, channel: o.channel,
		hc: &http.Client{Timeout: 10 * time.Second}}
	pubCtx, stopPub := context.WithCancel(ctx)
	pubDone := make(chan struct{})
	defer func() { stopPub(); <-pubDone; pub.hc.CloseIdleConnections() }()
	go func() { defer close(pubDone); pub.run(pubCtx, o.rate) }()

	var results []*StormResult
	for _, sigName := range strings.Split(o.signals, ",") {
		victim := busiestNode(nodes[:max(1, len(nodes)-1)], cr.clients)
		r, err := restartStorm(ctx, o, nodes, victim, cr, pub, sigName, logf)
		if err != nil {
			return results, err
		}
		results = append(results, r)
	}
	return results, nil
}

// startStormNodes starts --nodes ferry nodes in work, sharing a redis-server it starts
// too when there are several. stop, to be called even on an error, kills them all.
func startStormNodes(ctx context.Context, o *options, work string) (nodes []*node, stop func(), err error) {
	var stops []func()
	stop = func() {
		for _, f := range slices.Backward(stops) {
			f()
		}
	}
	args := []string{"--api-key", stormAPIKey, "--demo=false", "--log-level", "warn"}
	if o.nodes > 1 {
		rp, err := startRedis(ctx, o.redisBin, work)
		if err != nil {
			return nil, stop, err
		}
		stops = append(stops, rp.stop)
		args = append(args, "--redis", "redis://"+rp.addr+"/0", "--secret", "storm-bench-shared-secret-0123456789")
	}
	args = append(args, strings.Fields(o.ferryArgs)...)
	nodes = make([]*node, o.nodes)
	for i := range nodes {
		if nodes[i], err = newNode(fmt.Sprintf("node%d", i), o.ferryBin, work, append(slices.Clone(args), "--node-id", fmt.Sprintf("n%d", i))); err != nil {
			return nil, stop, err
		}
		stops = append(stops, nodes[i].kill)
		if err := nodes[i].start(ctx, nil); err != nil {
			return nil, stop, err
		}
	}
	return nodes, stop, nil
}

// stormCrowd is the clients of a storm, each in its own goroutine.
type stormCrowd struct {
	clients []*stormClient
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	// firstPeak is the first node's peak RSS while the clients first connected.
	firstPeak int64
}

// stop ends the clients and waits for them.
func (cr *stormCrowd) stop() { cr.cancel(); cr.wg.Wait() }

// connectStorm connects --clients clients to nodes, spread over the three transports,
// --conn-conc at a time, and returns once all are attached, sampling the first node's
// memory meanwhile. On an error the clients are cancelled, not waited for.
func connectStorm(ctx context.Context, o *options, nodes []*node, logf func(string, ...any)) (*stormCrowd, error) {
	env := &stormEnv{o: o, d: &dialer{timeout: 10 * time.Second}}
	for _, n := range nodes {
		env.hosts = append(env.hosts, n.addr)
	}
	env.wsDial = websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 2048, WriteBufferSize: 512,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return env.d.DialContext(ctx, network, addr, nil, 0)
		}}

	cr := &stormCrowd{clients: make([]*stormClient, o.clients)}
	clientCtx, stopClients := context.WithCancel(context.Background())
	cr.cancel = stopClients
	trs := []string{"websocket", "sse", "longpoll"}
	var ready sync.WaitGroup
	ready.Add(o.clients)
	sem := make(chan struct{}, o.connConc)
	logf("connecting %d clients to %d node(s)", o.clients, len(nodes))
	start := time.Now()
	for i := range cr.clients {
		c := &stormClient{e: env, id: i, tr: trs[i%3]}
		cr.clients[i] = c
		sem <- struct{}{}
		cr.wg.Add(1)
		go func() {
			defer cr.wg.Done()
			var once sync.Once
			c.run(clientCtx, func() { once.Do(func() { <-sem; ready.Done() }) })
		}()
	}
	connected, stopPeak := peakRSS(ctx, nodes[0].pid())
	err := waitGroup(ctx, &ready, o.connTimeout)
	connected()
	cr.firstPeak = stopPeak()
	if err != nil {
		stopClients()
		return nil, fmt.Errorf("connecting: %w", err)
	}
	logf("connected in %.1f s", time.Since(start).Seconds())
	return cr, nil
}

// peakRSS samples the memory of pid every 100 ms until stop, which returns the peak.
func peakRSS(ctx context.Context, pid int) (stop func(), peak func() int64) {
	result := make(chan int64, 1)
	sampleCtx, stop := context.WithCancel(ctx)
	go func() {
		var peak int64
		for sampleCtx.Err() == nil {
			if s, ok := readSample(pid); ok {
				peak = max(peak, s.rss)
			}
			sleep(sampleCtx, 100*time.Millisecond)
		}
		result <- peak
	}()
	return stop, func() int64 { return <-result }
}

// busiestNode returns the node of candidates with the most clients attached, the first on
// a tie. Clients reconnect to any node, so after a restart the restarted node may serve
// none of them; the next restart picks a node that does.
func busiestNode(candidates []*node, clients []*stormClient) *node {
	count := make([]int, len(candidates))
	for _, c := range clients {
		if s := c.snapshot(); s.live && s.node < len(candidates) {
			count[s.node]++
		}
	}
	return candidates[slices.Index(count, slices.Max(count))]
}

// restartStorm restarts victim, one of nodes, with the signal named sigName ("term" or
// "kill") under the clients of cr and measures the storm: the steady state before, the
// clients coming back, the node's memory and CPU meanwhile, and what the clients lost.
func restartStorm(ctx context.Context, o *options, nodes []*node, victim *node, cr *stormCrowd, pub *stormPublisher, sigName string, logf func(string, ...any)) (*StormResult, error) {
	sig := syscall.SIGTERM
	if sigName == "kill" {
		sig = syscall.SIGKILL
	}
	r := &StormResult{Label: o.label, Scenario: o.scenario, Time: time.Now().UTC().Format(time.RFC3339),
		Clients: o.clients, Nodes: len(nodes), Signal: "SIG" + strings.ToUpper(sigName), ConnectPeakRSSKiB: cr.firstPeak}
	logf("steady state for %v", o.steady)
	s0, _ := readSample(victim.pid())
	if err := sleep(ctx, o.steady); err != nil {
		return nil, err
	}
	s1, _ := readSample(victim.pid())
	r.SteadyRSSKiB = s1.rss
	r.SteadyCPUPct = cpuPct(s0, s1)
	others := watchOthers(ctx, slices.DeleteFunc(slices.Clone(nodes), func(n *node) bool { return n == victim }))
	defer others.stop() // on the early returns; called below otherwise
	pub0ok, pub0failed := pub.ok.Load(), pub.failed.Load()

	for _, c := range cr.clients {
		c.resetStorm()
	}
	logf("restarting %s with %s", victim.name, r.Signal)
	tSig := time.Now()
	if err := victim.stop(sig); err != nil {
		return nil, err
	}
	// Sample the new process from its start (the storm begins before it answers /healthz,
	// which waits in the listen queue with everyone else) until the storm is over.
	sampler := newStormSampler(ctx)
	defer sampler.stop() // on the early returns; called below otherwise
	if err := victim.start(ctx, sampler.from); err != nil {
		return nil, err
	}
	tUp := time.Now()
	if err := awaitBack(ctx, o, cr.clients, len(nodes) > 1, tUp, logf); err != nil {
		return nil, err
	}
	sleep(ctx, 2*time.Second)
	r.addSamples(sampler.stop())
	others.stop()
	r.OtherSteadyRSSKiB, r.OtherPeakRSSKiB = others.busiest()

	behind, err := awaitCaughtUp(ctx, o.drain, cr.clients, pub)
	r.Behind = behind
	if err != nil {
		return nil, err
	}
	if s, ok := readSample(victim.pid()); ok {
		r.AfterRSSKiB = s.rss
	}
	// The node answered again when /healthz did, or earlier if a client attached to it
	// first; in a cluster clients come back on the other nodes before.
	if len(nodes) == 1 {
		for _, c := range cr.clients {
			if s := c.snapshot(); !s.backAt.IsZero() && s.backAt.Before(tUp) {
				tUp = s.backAt
			}
		}
	}
	r.DownMs = ms(tUp.Sub(tSig))
	r.tally(cr.clients, tSig, tUp)
	r.Published, r.PublishErrs = pub.ok.Load()-pub0ok, pub.failed.Load()-pub0failed
	return r, nil
}

// awaitBack waits until every client that lost its attachment has attached again, or
// --storm-timeout. In a cluster, those on other nodes never lose theirs; a client counts
// as lost once it has noticed. tUp is when the restarted node answered again.
func awaitBack(ctx context.Context, o *options, clients []*stormClient, cluster bool, tUp time.Time, logf func(string, ...any)) error {
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
		settled := affected == o.clients || (cluster && time.Since(tUp) > 2*time.Second)
		if settled && down == 0 && back == affected {
			return nil
		}
		if time.Now().After(deadline) {
			logf("storm timeout: %d affected, %d back, %d down", affected, back, down)
			return nil
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// awaitCaughtUp waits, for at most drain, until every client has reached what the
// publisher had got accepted when it was called, and returns how many have not.
func awaitCaughtUp(ctx context.Context, drain time.Duration, clients []*stormClient, pub *stormPublisher) (behind int, err error) {
	ep, off := pub.last()
	drainEnd := time.Now().Add(drain)
	for {
		behind = 0
		for _, c := range clients {
			if s := c.snapshot(); s.ep != ep || s.off < off {
				behind++
			}
		}
		if behind == 0 || time.Now().After(drainEnd) {
			return behind, nil
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return behind, err
		}
	}
}

// tally adds up what the clients counted during the storm, and how long the affected
// ones took to come back from tUp (the node answering) and from tSig (the signal).
func (r *StormResult) tally(clients []*stormClient, tSig, tUp time.Time) {
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
}

// addSamples sets the storm's window, CPU and peaks from the restarted node's samples.
func (r *StormResult) addSamples(ss []sample) {
	if len(ss) <= 1 {
		return
	}
	r.StormWindowMs = ms(ss[len(ss)-1].at.Sub(ss[0].at))
	r.StormCPUPct = cpuPct(ss[0], ss[len(ss)-1])
	for i, s := range ss {
		r.PeakRSSKiB = max(r.PeakRSSKiB, s.rss)
		if i >= 5 {
			r.PeakCPUPct = max(r.PeakCPUPct, cpuPct(ss[i-5], s))
		}
	}
}

// stormSampler samples a process every 100 ms from the moment from is called with its
// pid until stop.
type stormSampler struct {
	ctx     context.Context
	cancel  context.CancelFunc
	samples chan []sample
	started bool
}

func newStormSampler(ctx context.Context) *stormSampler {
	s := &stormSampler{samples: make(chan []sample, 1)}
	s.ctx, s.cancel = context.WithCancel(ctx)
	return s
}

// from starts sampling pid; node.start calls it as soon as the process runs.
func (s *stormSampler) from(pid int) {
	s.started = true
	go func() {
		var ss []sample
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if smp, ok := readSample(pid); ok {
				ss = append(ss, smp)
			}
			select {
			case <-s.ctx.Done():
				s.samples <- ss
				return
			case <-t.C:
			}
		}
	}()
}

// stop ends the sampling and returns the samples; called again, it returns none.
func (s *stormSampler) stop() []sample {
	s.cancel()
	if !s.started {
		return nil
	}
	s.started = false
	return <-s.samples
}

// otherNodes follows the peak memory of the nodes that are not restarted, against their
// steady state before the storm.
type otherNodes struct {
	steady, peak map[*node]int64
	cancel       context.CancelFunc
	done         chan struct{}
}

// watchOthers reads the steady RSS of nodes and samples their peak every 100 ms until
// stop.
func watchOthers(ctx context.Context, nodes []*node) *otherNodes {
	w := &otherNodes{steady: map[*node]int64{}, peak: map[*node]int64{}, done: make(chan struct{})}
	for _, n := range nodes {
		if s, ok := readSample(n.pid()); ok {
			w.steady[n] = s.rss
		}
	}
	ctx, w.cancel = context.WithCancel(ctx)
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			for n := range w.steady {
				if s, ok := readSample(n.pid()); ok {
					w.peak[n] = max(w.peak[n], s.rss)
				}
			}
			sleep(ctx, 100*time.Millisecond)
		}
	}()
	return w
}

// stop ends the sampling and waits for it; it may be called more than once.
func (w *otherNodes) stop() { w.cancel(); <-w.done }

// busiest returns the steady and peak RSS of the node whose memory grew most, after stop.
func (w *otherNodes) busiest() (steadyKiB, peakKiB int64) {
	for n, steady := range w.steady {
		if steady > 0 && (steadyKiB == 0 || float64(w.peak[n])/float64(steady) > float64(peakKiB)/float64(steadyKiB)) {
			steadyKiB, peakKiB = steady, w.peak[n]
		}
	}
	return steadyKiB, peakKiB
}
